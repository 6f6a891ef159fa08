#!/usr/bin/env bash
# The quick start: installs the Debian packages sluice needs, builds it, and
# runs sluiced in the foreground with deploy/sluice.conf (NATS on
# 127.0.0.1:4222, admin HTTP and dashboard on http://127.0.0.1:8080/).
# Ctrl-C stops it cleanly. Pass another config file as the first argument.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
if [ ! -f build/build.ninja ]; then
	meson setup build --buildtype=release
fi
ninja -C build
CONFIG=${1:-deploy/sluice.conf}
build/control/sluiced --check "$CONFIG" | tail -n 8
echo "starting sluiced with $CONFIG (Ctrl-C to stop)"
exec build/control/sluiced --config "$CONFIG"
