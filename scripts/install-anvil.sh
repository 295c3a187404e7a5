#!/usr/bin/env sh
# Installs the anvil dev chain (foundry) from npm into <repo>/.ci/node_modules, where the
# payment-channel Ethereum tests look for it (after $ANVIL_BIN and before `anvil` on PATH):
#   .ci/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
# Used by CI; developers run it once. Needs node + npm; no compiler, no foundryup.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$repo/.ci"
npm install --prefix "$repo/.ci" @foundry-rs/anvil
"$repo/.ci/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil" --version
