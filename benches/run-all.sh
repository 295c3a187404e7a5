#!/bin/sh
# Runs the end-to-end benchmarks and rewrites docs/benchmarks.md and docs/throughput.svg.
# About 10 minutes on 2 cores. The ethers v5 script runs right after the Rust floor and
# transfers so that its ratio to them is taken under similar load.
set -eu
cd "$(dirname "$0")/.."
cargo bench -p paid-benches --bench transfer
# The Rust whole payment right before the ethers script, for a same-minute ratio.
cargo bench -p paid-benches --bench payment -- 'payment/(bare|whole)'
(cd benches/original && npm install --no-audit --no-fund && node payment.js --out ../../target/criterion/original-stack.json)
cargo bench -p paid-benches --bench scale
python3 benches/publish.py
