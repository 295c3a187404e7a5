#!/bin/sh
# Runs the end-to-end benchmarks for both signature backends and rewrites docs/benchmarks.md
# and docs/throughput.svg. About 15 minutes on 2 cores. Each backend's figures go to their own
# criterion directory; within one, the floor (bare / whole payment) runs in the same binary right
# before the transfers, and the ethers v5 script right after the payment bench, so that every
# ratio is taken under similar load.
#   SCALE_NS  channel counts of the scale runs, one run each (default 1000; the published table
#             has "1000 2000 5000 10000", which adds about 10 minutes per backend); the report
#             details the last one
#   CASES     criterion filter of the transfer cases (default: the published ones)
set -eu
cd "$(dirname "$0")/.."
: "${SCALE_NS:=1000}"
: "${CASES:=^(floor/|transfer/(duplex|tcp)/(unpaid|paid_(4KiB|16KiB|1MiB)))}"
for backend in libsecp256k1 k256; do
    dir="$PWD/target/criterion-$backend"
    if [ "$backend" = k256 ]; then features=""; else features="--features $backend"; fi
    # shellcheck disable=SC2086
    CRITERION_HOME="$dir" cargo bench -p paid-benches $features --bench transfer -- "$CASES"
    # shellcheck disable=SC2086
    CRITERION_HOME="$dir" cargo bench -p paid-benches $features --bench payment -- 'payment/(bare|whole)'
    if [ "$backend" = libsecp256k1 ]; then
        (cd benches/original && npm install --no-audit --no-fund && node payment.js --out "$dir/original-stack.json") ||
            echo "the ethers v5 comparison was skipped (npm install or node failed)" >&2
    fi
    for n in $SCALE_NS; do
        # shellcheck disable=SC2086
        SCALE_N=$n CRITERION_HOME="$dir" cargo bench -p paid-benches $features --bench scale
    done
done
CRITERION_HOME="$PWD/target/criterion-libsecp256k1" /usr/bin/python3 benches/reference/libtorrent_loopback.py
python3 benches/publish.py --criterion-dir target/criterion-libsecp256k1 --compare-dir target/criterion-k256
