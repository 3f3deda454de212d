#!/usr/bin/env bash
# The full test suite: installs what is missing, builds, prepares the reference environment and
# the default model, then runs every test with ctest. Quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
BUILD=${TESSERA_BUILD_DIR:-build}
REF_PYTHON=$(scripts/ref_venv.sh)
scripts/build.sh -DTESSERA_REF_PYTHON="$REF_PYTHON"
MODEL=$(scripts/fetch_model.sh)
MODEL_F32=$(scripts/fetch_model.sh f32)
MODEL_Q4_K_M=$(scripts/fetch_model.sh q4_k_m)
cmake -S . -B "$BUILD" -DTESSERA_DEFAULT_MODEL="$PWD/$MODEL" \
      -DTESSERA_DEFAULT_MODEL_F32="$PWD/$MODEL_F32" \
      -DTESSERA_DEFAULT_MODEL_Q4_K_M="$PWD/$MODEL_Q4_K_M" \
      -DTESSERA_DEFAULT_GGUF="$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf" >/dev/null
ninja -C "$BUILD" >/dev/null
ctest --test-dir "$BUILD" --output-on-failure -j "${TESSERA_TEST_JOBS:-2}" "$@"
