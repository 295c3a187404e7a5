#!/usr/bin/env bash
# Installs Debian's python3-libtorrent (libtorrent 2.0.8), the stock BitTorrent peer of the interop
# tests. It is built for Debian's Python: tests run it with /usr/bin/python3. Idempotent.
set -euo pipefail
if /usr/bin/python3 -c "import libtorrent" >/dev/null 2>&1; then
  echo "python3-libtorrent already installed"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-libtorrent
/usr/bin/python3 -c "import libtorrent; print('libtorrent', libtorrent.__version__)"
