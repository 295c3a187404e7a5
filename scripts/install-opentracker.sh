#!/usr/bin/env bash
# Installs Debian's opentracker, the BitTorrent tracker (HTTP and UDP) of the tracker tests
# (examples/tests/trackers.rs). Debian builds it in whitelist mode. Idempotent.
set -euo pipefail
if command -v opentracker >/dev/null 2>&1 || [ -x /usr/sbin/opentracker ]; then
  echo "opentracker already installed"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq opentracker
