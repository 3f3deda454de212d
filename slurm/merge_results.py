#!/usr/bin/env python3
"""Joins the parts of an array job (slurm/generate_array.sbatch) into one results file, checking
that every non-blank line of the input has exactly one record across the parts: the id of a
request (or "line-N" for a line without one), and for a line whose id an earlier line used, its
duplicate_id error record. Writes the output whole (a temporary file renamed into place), or
nothing and exit 1 naming what is missing or doubled. Standard library only.

  slurm/merge_results.py --input prompts.jsonl --output results.jsonl results.jsonl.part-*-of-16
"""
import argparse
import json
import os
import sys


def expected_keys(path):
    """The record key of every non-blank input line, as tessera generate names them."""
    keys, seen = [], set()
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            key = f"line-{n}"
            try:
                body = json.loads(line)
                if isinstance(body, dict) and isinstance(body.get("id"), (str, int)) and \
                        not isinstance(body.get("id"), bool):
                    key = str(body["id"])
            except ValueError:
                pass
            if key in seen:
                key = f"{key}#line {n}"
            seen.add(key.split("#line ")[0])
            keys.append(key)
    return keys


def record_key(record):
    err = record.get("error")
    if isinstance(err, dict) and err.get("reason") == "duplicate_id":
        return f"{record['id']}#line {err['line']}"
    return record["id"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("parts", nargs="+")
    args = p.parse_args()
    want = expected_keys(args.input)
    got, lines = {}, []
    for part in args.parts:
        with open(part) as f:
            for n, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    print(f"merge_results: {part} line {n} is cut short: resubmit that part "
                          "first", file=sys.stderr)
                    return 1
                key = record_key(json.loads(line))
                if key in got:
                    print(f"merge_results: {key!r} has records in {got[key]} and {part}",
                          file=sys.stderr)
                    return 1
                got[key] = part
                lines.append(line)
    missing = [k for k in want if k not in got]
    extra = sorted(set(got) - set(want))
    if missing or extra:
        print(f"merge_results: {len(missing)} input lines have no record (first: "
              f"{missing[:3]}), {len(extra)} records match no input line (first: {extra[:3]})",
              file=sys.stderr)
        return 1
    tmp = args.output + ".merging"
    with open(tmp, "w") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, args.output)
    print(f"merge_results: {len(lines)} records from {len(args.parts)} parts in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
