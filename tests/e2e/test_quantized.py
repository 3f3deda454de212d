"""Quantized weights end to end, through `tessera perplexity` over a fixed text (tests/data/text):
the default model as shipped (Q4_1 blocks, a Q8_0 embedding and head) and as tessera's quantizer
requantizes it to Q4_K_M (Q4_K, Q6_K, and Q5_0 / Q8_0 where rows of 576 are not whole 256-blocks).

Each file is scored one token per step, as decoding runs (the quantized kernels on int16
activation blocks), and compared with the float32 path on the same weights dequantized (the
file's prompt path: one prefill decodes the weights exactly and multiplies in float32): the most
likely next token agrees at >= 97% of 256 teacher-forced positions and the perplexity is within
1%, on one rank and under TP=3, PP=2 and SP=2."""
import json
import os
import re
import subprocess

import pytest

from conftest import MPI_ENV, make_hf_checkpoint

TEXT = os.path.join(os.path.dirname(__file__), "..", "data", "text", "lighthouse.txt")
LAYOUTS = {"one rank": (), "tp3": ("--tp", "3"), "pp2": ("--pp", "2"), "sp2": ("--sp", "2")}


def score(tessera, model, tmp_path, name, *args, layout=()):
    out = tmp_path / f"{name}.json"
    ranks = 1
    for flag, n in zip(layout[::2], layout[1::2]):
        ranks *= int(n)
    cmd = [tessera, "perplexity", "-m", model, "-f", TEXT, "--tokens", "257",
           "--predictions", str(out), *args, *layout]
    if ranks > 1:
        cmd = ["mpirun", "-np", str(ranks)] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, env=MPI_ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def agreement(a, b):
    assert a["tokens"] == b["tokens"] and len(a["argmax"]) == 256
    return sum(x == y for x, y in zip(a["argmax"], b["argmax"])) / len(a["argmax"])


@pytest.mark.parametrize("which", ["q4_1", "q4_k_m"])
def test_decode_steps_agree_with_the_float32_path(tessera, default_model, default_model_q4_k_m,
                                                  tmp_path, which):
    model = default_model if which == "q4_1" else default_model_q4_k_m
    reference = score(tessera, model, tmp_path, "prefill")  # the float32 path
    for name, layout in LAYOUTS.items():
        got = score(tessera, model, tmp_path, name, "--decode-steps", layout=layout)
        top1 = agreement(reference, got)
        ratio = got["perplexity"] / reference["perplexity"]
        print(f"{which} {name}: top-1 agreement {top1:.4f}, perplexity {got['perplexity']:.4f} "
              f"vs {reference['perplexity']:.4f}")
        assert top1 >= 0.97, (which, name, top1)
        assert abs(ratio - 1) <= 0.01, (which, name, ratio)


def test_the_prompt_path_is_the_float32_model(tessera, default_model, default_model_f32,
                                              tmp_path):
    # The kept Q4_1 file's prefill (weights decoded for float32 GEMM) scores the text as the
    # float32 file does: the reference above is the float32 path.
    kept = score(tessera, default_model, tmp_path, "kept")
    f32 = score(tessera, default_model_f32, tmp_path, "f32")
    assert kept["argmax"] == f32["argmax"]
    assert abs(kept["perplexity"] / f32["perplexity"] - 1) < 1e-4


def test_a_layout_that_cuts_blocks_is_refused_on_every_rank(tessera, tmp_path):
    # Rows of 256 and 512 quantized as q4_k: 4 ranks would hold 128 of down_proj's 512 input
    # features, half a block each.
    make_hf_checkpoint(str(tmp_path), hidden=256, ffn=512, layers=4)
    model = str(tmp_path / "q4_k.h5")
    subprocess.run([tessera, "convert", "-i", str(tmp_path), "-o", model, "--quantize", "q4_k"],
                   check=True, capture_output=True)
    r = subprocess.run(["mpirun", "-np", "4", tessera, "generate", "-m", model, "--tp", "4", "-p",
                        "hello"], capture_output=True, text=True, env=MPI_ENV, timeout=120)
    assert r.returncode != 0
    assert "would cut the q4_k blocks (256 elements) of layers." in r.stderr, r.stderr
    assert "each rank's 64 of its 256 input features are not whole blocks" in r.stderr or \
        "each rank's 128 of its 512 input features are not whole blocks" in r.stderr, r.stderr
    assert "--tp 1 --pp 4 would work" in r.stderr, r.stderr
    ok = subprocess.run(["mpirun", "-np", "4", tessera, "generate", "-m", model, "--pp", "4",
                         "-p", "hello", "-n", "4"], capture_output=True, text=True, env=MPI_ENV,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("fmt", ["q8_0", "q4_1", "q5_0", "q4_k", "q6_k", "i4_g32", "i4_g128",
                                 "f8_e4m3"])
def test_a_gpu_computes_on_a_quantized_file_as_stored(tessera, tmp_path, fmt):
    # On the GPU path (the CUDA emulator here) quantized weights stay blocks (kernels/cuda/
    # quant_linear_launchers.h: decode steps read them decoded in registers, the prompt decodes
    # them for the GEMM): the rank holds the file's bytes, not float32's, and its float32 text is
    # the CPU's, which multiplies the blocks itself (int16 activations: the same greedy tokens on
    # this model).
    make_hf_checkpoint(str(tmp_path), hidden=256, ffn=512, layers=2)
    model = str(tmp_path / f"{fmt}.h5")
    subprocess.run([tessera, "convert", "-i", str(tmp_path), "-o", model, "--quantize", fmt],
                   check=True, capture_output=True)
    args = [tessera, "generate", "-m", model, "-p", "the quick brown", "-n", "12", "--ignore-eos"]
    cpu = subprocess.run(args + ["--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert cpu.returncode == 0, cpu.stderr
    emu = subprocess.run(args + ["--device", "emulator", "--dtype", "f32"], capture_output=True,
                         text=True, timeout=300)
    if "built without CUDA" in emu.stderr:
        pytest.skip("this tessera was built without CUDA")
    assert emu.returncode == 0, emu.stderr
    assert emu.stdout == cpu.stdout and len(cpu.stdout) > 3, (emu.stdout, cpu.stdout)
    held = re.search(r"([0-9.]+) MB of weights", emu.stderr)
    assert held and float(held.group(1)) == float(re.search(
        r"([0-9.]+) MB of weights", cpu.stderr).group(1)), (emu.stderr, cpu.stderr)
    # (float32 would be about 5.6 MB: 1.4 M parameters)
    assert float(held.group(1)) < 2.0, emu.stderr
