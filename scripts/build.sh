#!/usr/bin/env bash
# Configures (once) and builds tessera in build/ with ninja. Extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TESSERA_BUILD_DIR:-build}
if [ ! -f "$BUILD/build.ninja" ] || [ $# -gt 0 ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
fi
ninja --quiet -C "$BUILD" ${TESSERA_BUILD_TARGETS:-}
