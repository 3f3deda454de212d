#!/usr/bin/env bash
# Creates the Python virtual environment of the reference tests (Hugging Face transformers on
# PyTorch, CPU) in build/pyref, once. Prints its python's path.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TESSERA_BUILD_DIR:-build}/pyref
REQ=tests/reference/requirements.txt
STAMP=$VENV/.installed
if [ ! -f "$STAMP" ] || ! cmp -s "$REQ" "$STAMP"; then
  echo "tessera: creating the reference environment in $VENV (torch, transformers; a few minutes once)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
  cp "$REQ" "$STAMP"
fi
echo "$PWD/$VENV/bin/python"
