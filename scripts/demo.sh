#!/usr/bin/env bash
# The demo: installs what is missing, builds, fetches and converts the default model, and asks it
# a question through the main job (tessera generate). Quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
MODEL=$(scripts/fetch_model.sh)
PROMPT=${1:-"What is the capital of France? Answer in one sentence."}
echo "\$ build/launch/tessera generate --model $MODEL --chat --prompt \"$PROMPT\"" >&2
build/launch/tessera generate --model "$MODEL" --chat --max-tokens 128 --prompt "$PROMPT"
