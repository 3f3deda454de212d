"""--comm-dtype end to end on the default model: what crosses ranks (the TP all-reduce's partial
sums, the hidden states between pipeline stages) as f32, bf16 or q8.

Accuracy: under TP=3 with PP=2, each format's most likely next token agrees with f32's (same
layout) at >= 99% of 256 teacher-forced positions of a fixed text (tests/data/text), and its
perplexity is within 1%. Bytes: the bytes per token a rank sends (the "communication:" line)
shrink from f32's by exactly what the model's shape says: 2 all-reduces of `hidden` values per
layer under TP, one hidden state per token from stage 0 under PP. And `tessera plan`'s estimate
with the links given."""
import json
import os
import re
import subprocess

import pytest

from conftest import MPI_ENV

TEXT = os.path.join(os.path.dirname(__file__), "..", "data", "text", "lighthouse.txt")
# The default model's shape (SmolLM2-135M: its config.json)
LAYERS, HIDDEN = 30, 576
WIRE_BYTES = {"f32": 4 * HIDDEN, "bf16": 2 * HIDDEN, "q8": HIDDEN // 32 * 37}


def all_reduce_bytes(comm_dtype, ranks):
    """A rank's share of an all-reduce of one hidden state (parallel/timed_communicator.h): f32
    2 (p - 1) / p of it (the ring's); a compressed one gathers p - 1 encoded copies."""
    if comm_dtype == "f32":
        return 2 * (ranks - 1) / ranks * WIRE_BYTES["f32"]
    return (ranks - 1) * WIRE_BYTES[comm_dtype]


def score(tessera, model, tmp_path, comm_dtype):
    out = tmp_path / f"{comm_dtype}.json"
    cmd = ["mpirun", "-np", "6", tessera, "perplexity", "-m", model, "-f", TEXT, "--tokens", "257",
           "--tp", "3", "--pp", "2", "--comm-dtype", comm_dtype, "--predictions", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=MPI_ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def test_compressed_formats_agree_with_f32(tessera, default_model, tmp_path):
    reference = score(tessera, default_model, tmp_path, "f32")
    for comm_dtype in ("bf16", "q8"):
        got = score(tessera, default_model, tmp_path, comm_dtype)
        assert got["tokens"] == reference["tokens"] and len(got["argmax"]) == 256
        top1 = sum(a == b for a, b in zip(got["argmax"], reference["argmax"])) / 256
        ratio = got["perplexity"] / reference["perplexity"]
        print(f"{comm_dtype}: top-1 agreement {top1:.4f}, perplexity ratio {ratio:.5f}")
        assert top1 >= 0.99, (comm_dtype, top1)
        assert abs(ratio - 1) <= 0.01, (comm_dtype, ratio)


def kb_per_token(tessera, model, layout, comm_dtype):
    ranks = int(layout[1])
    r = subprocess.run(["mpirun", "-np", str(ranks), tessera, "generate", "-m", model, *layout,
                        "-p", "The lighthouse keeper", "-n", "12", "--ignore-eos",
                        "--comm-dtype", comm_dtype], capture_output=True, text=True, env=MPI_ENV,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    m = re.search(r"^communication: .*; ([0-9.]+) KB sent per token per rank \(--comm-dtype "
                  + comm_dtype + r"\)$", r.stderr, re.M)
    assert m, r.stderr
    return float(m.group(1))


@pytest.mark.parametrize("layout", [("--tp", "3"), ("--pp", "2")])
def test_bytes_per_token_shrink_by_the_encoded_size(tessera, default_model, layout):
    kb = {d: kb_per_token(tessera, default_model, layout, d) for d in ("f32", "bf16", "q8")}
    for d in ("bf16", "q8"):
        if layout[0] == "--tp":  # every rank: two all-reduces a layer
            expected = 2 * LAYERS * (all_reduce_bytes("f32", 3) - all_reduce_bytes(d, 3))
        else:  # stage 0 sends each token's hidden state; the mean over the 2 ranks
            expected = (WIRE_BYTES["f32"] - WIRE_BYTES[d]) / 2
        assert kb["f32"] - kb[d] == pytest.approx(expected / 1e3, abs=0.015), (layout, d, kb)


def test_an_unknown_comm_dtype_is_one_line(tessera, default_model):
    r = subprocess.run([tessera, "generate", "-m", default_model, "-p", "hi", "--comm-dtype",
                        "int4"], capture_output=True, text=True, env=MPI_ENV, timeout=60)
    assert r.returncode != 0
    assert r.stderr.strip() == "tessera: error: --comm-dtype 'int4' is not one of f32, bf16, q8"


def test_plan_estimates_with_the_links_given(tessera, tmp_path):
    out = tmp_path / "plan.json"
    config = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "llama-3-70b.json")
    r = subprocess.run([tessera, "plan", "-m", config, "--nodes", "4", "--gpus-per-node", "8",
                        "--inter-node-bandwidth", "1Gbit/s", "--inter-node-latency", "0.2ms",
                        "--json", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "links 1Gbit/s, 0.2ms between nodes" in r.stdout, r.stdout
    layouts = {(p["tp"], p["pp"]): p for p in json.loads(out.read_text())["layouts"]}
    # TP across nodes is listed with its estimate, and pays for the slow links
    assert layouts[(16, 2)]["tp_across_nodes"] and not layouts[(16, 2)]["recommended"]
    assert layouts[(16, 2)]["comm_seconds"] > 0.9 * layouts[(16, 2)]["step_seconds"]
    assert layouts[(8, 4)]["comm_seconds"] < 0.5 * layouts[(8, 4)]["step_seconds"]
    bad = subprocess.run([tessera, "plan", "-m", config, "--inter-node-bandwidth", "1Gbps"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert bad.stderr.strip() == ("tessera: error: --inter-node-bandwidth unit 'Gbps' (use "
                                  "Gbit/s, Mbit/s, GB/s, MB/s or TB/s)")
