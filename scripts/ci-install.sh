#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine (CI or a developer's), idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."
for s in scripts/install-anvil.sh scripts/fetch-nitro-artifacts.sh scripts/build-contracts.sh scripts/install-libtorrent.sh scripts/install-web3torrent-peer.sh scripts/install-opentracker.sh scripts/install-webtorrent.sh; do
  if [ -x "$s" ]; then
    echo "--> $s"
    "$s"
  fi
done
