#!/usr/bin/env sh
# Installs webtorrent 1.9.x (npm, pure JavaScript when its install scripts are skipped) into
# <repo>/.ci/webtorrent/node_modules for examples/tests/webtorrent.rs, a stock BitTorrent peer
# run in Node over plain TCP. 2.x and 3.x load a native WebRTC module at import, which cannot be
# built everywhere; 1.9 only loads it when WebRTC is used, which the test peer never does.
# Idempotent: does nothing when the pinned version is already there. Needs node + npm.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
dir="$repo/.ci/webtorrent"
version=1.9.7
installed=$(node -e 'try { console.log(require(process.argv[1] + "/node_modules/webtorrent/package.json").version) } catch (e) {}' "$dir" 2>&1 || true)
if [ "$installed" = "$version" ]; then
  echo "webtorrent $version already installed in $dir"
  exit 0
fi
mkdir -p "$dir"
if [ ! -f "$dir/package.json" ]; then
  printf '{"name":"webtorrent-test-peer","private":true}\n' > "$dir/package.json"
fi
npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts "webtorrent@$version"
node -e 'require(process.argv[1] + "/node_modules/webtorrent"); console.log("webtorrent", require(process.argv[1] + "/node_modules/webtorrent/package.json").version)' "$dir"
