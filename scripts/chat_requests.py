#!/usr/bin/env python3
"""Writes the pipeline-decode benchmarks' batch: 8 short chat requests of 48 tokens each, as
JSONL, to the path given (scripts/bench_pipeline_decode.sh, scripts/bench_old_new.sh)."""
import json
import sys

PROMPTS = ["Tell me about the sea.", "What is a cat?", "Name three colours.", "Why is the sky blue?",
           "Write a haiku about rain.", "Explain gravity simply.", "What do bees make?",
           "Describe a forest."]

with open(sys.argv[1], "w") as f:
    for i, p in enumerate(PROMPTS):
        f.write(json.dumps({"id": str(i), "messages": [{"role": "user", "content": p}],
                            "max_tokens": 48, "ignore_eos": True}) + "\n")
