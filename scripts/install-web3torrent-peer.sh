#!/usr/bin/env sh
# Installs the Node packages of the web3torrent interop peer (examples/tests/web3torrent/) into
# <repo>/.ci/interop/node_modules: bittorrent-protocol 3.1.1 and bencode 2.0.1 (the versions
# web3torrent pinned) and js-sha3 (keccak-256). All pure JavaScript: no compiler, no native build.
# Used by CI; developers run it once. Needs node + npm.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
dir="$repo/.ci/interop"
mkdir -p "$dir"
if [ ! -f "$dir/package.json" ]; then
  printf '{"name":"web3torrent-interop-peer","private":true}\n' > "$dir/package.json"
fi
npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts \
  bittorrent-protocol@3.1.1 bencode@2.0.1 js-sha3@0.9.3
node -e 'require(process.argv[1] + "/node_modules/bittorrent-protocol"); console.log("bittorrent-protocol", require(process.argv[1] + "/node_modules/bittorrent-protocol/package.json").version)' "$dir"
