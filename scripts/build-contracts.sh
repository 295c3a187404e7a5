#!/usr/bin/env sh
# Builds this repository's contracts (contracts/PaymentApp.sol, the test tokens) with the pinned
# solc-js and writes their Hardhat-style artifacts
#   PaymentApp.json  Token.json  BadToken.json
# next to the published adjudicator (scripts/fetch-nitro-artifacts.sh), in $NITRO_ARTIFACTS_DIR,
# default <repo>/target/nitro-artifacts. Fails if PaymentApp's runtime code does not hash to
# contracts/PaymentApp.runtime-hash (see contracts/README.md).
#
# Installs contracts/node_modules from contracts/package-lock.json with `npm ci`, only when the
# lockfile changed since the last install; the compile itself takes a few seconds.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
stamp="$repo/contracts/node_modules/.paid-torrent-lock"
if ! cmp -s "$repo/contracts/package-lock.json" "$stamp" 2>/dev/null; then
    npm ci --prefix "$repo/contracts"
    cp "$repo/contracts/package-lock.json" "$stamp"
fi
node "$repo/contracts/build.mjs" "$@"
