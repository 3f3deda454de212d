#!/usr/bin/env bash
# Builds the CPU peer, llama.cpp (llama-bench, llama-server, llama-quantize), from the
# llama-cpp-python source distribution on PyPI (its vendor/llama.cpp), into build/peers/ (cached:
# quick once built). Prints the folder holding the binaries. Never part of the test suite: about
# 12 minutes on 2 cores.
#   scripts/build_llamacpp.sh [VERSION]     (default 0.3.36, the one the README's figures used)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-0.3.36}
PEERS=${TESSERA_BUILD_DIR:-build}/peers
SRC=$PEERS/llama-cpp-python-$VERSION
BIN=$PEERS/llama.cpp-$VERSION/bin
if [ -x "$BIN/llama-bench" ] && [ -x "$BIN/llama-server" ] && [ -x "$BIN/llama-quantize" ]; then
  echo "$PWD/$BIN"
  exit 0
fi
mkdir -p "$PEERS"
if [ ! -d "$SRC/vendor/llama.cpp" ]; then
  echo "tessera: fetching llama-cpp-python $VERSION's source distribution" >&2
  python3 -m pip download --quiet --no-deps --no-binary :all: --disable-pip-version-check \
    -d "$PEERS" "llama-cpp-python==$VERSION" >&2
  tar -xzf "$PEERS/llama_cpp_python-$VERSION.tar.gz" -C "$PEERS"
  mv "$PEERS/llama_cpp_python-$VERSION" "$SRC"
fi
echo "tessera: building llama.cpp (llama-bench, llama-server, llama-quantize; ~12 minutes on 2 cores)" >&2
cmake -S "$SRC/vendor/llama.cpp" -B "$PEERS/llama.cpp-$VERSION" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_OPENSSL=OFF >&2
cmake --build "$PEERS/llama.cpp-$VERSION" -j "$(nproc)" --target llama-bench llama-server \
  llama-quantize >&2
echo "$PWD/$BIN"
