"""Quantized checkpoints as people publish them, end to end: a random tiny Llama and Qwen2
(hidden 256, ffn 512, 2 layers) have every linear weight quantized by the test into AWQ (groups of
128), GPTQ (groups of 64, asymmetric, legacy zeros; and groups of 128 with act-order, g_idx
shuffled, which tessera stores sorted by group with an input order, and under TP a row-parallel
rank regroups its features' columns: TP=4 too, though its splits cut the groups) and FP8 e4m3 (a scale per output feature)
checkpoints (tests/reference/quantized_formats.py, written from the formats' definitions), which
`tessera convert` imports into its blocks. The reference is transformers running the same model
with each weight dequantized by numpy from the checkpoint: over 128 teacher-forced positions of a
text, the most likely next token agrees at >= 97%, by one prefill (weights decoded to float32
tiles) and one token per step (the int4 blocks' integer kernels, FP8's float path), on one rank
and under TP=2 x PP=2; and on the emulated GPU (the blocks decoded there for the GEMM, act-order's
gather on the GPU) for one format per architecture."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import MPI_ENV, make_hf_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import quantized_formats as qf  # noqa: E402

TEXT = os.path.join(HERE, "..", "data", "text", "lighthouse.txt")
FORMATS = {
    "awq_g128": ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
                  "version": "gemm"},
                 lambda w: qf.awq_from_float(w, 128), lambda t: qf.dequant_awq(t, 128)),
    "gptq_g64_asym": ({"quant_method": "gptq", "bits": 4, "group_size": 64, "sym": False,
                       "desc_act": False, "checkpoint_format": "gptq"},
                      lambda w: qf.gptq_from_float(w, 64, sym=False),
                      lambda t: qf.dequant_gptq(t, 64, legacy=True)),
    "gptq_g128_act_order": ({"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True,
                             "desc_act": True, "checkpoint_format": "gptq"},
                            lambda w: qf.gptq_from_float(w, 128, sym=True, act_order_seed=5),
                            lambda t: qf.dequant_gptq(t, 128, legacy=True)),
    "fp8_channel": ({"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0},
                    lambda w: qf.fp8_from_float(w, per_channel=True), qf.dequant_fp8),
}
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantized_checkpoint(folder, arch, fmt, extra=None):
    """Rewrites the float checkpoint in `folder` with its linear weights quantized in format
    `fmt` (and the tensors `extra` added, name -> float32 array); returns {tensor name:
    dequantized weight} for the reference."""
    import safetensors.numpy
    config_extra, quantize, dequantize = FORMATS[fmt]
    path = os.path.join(folder, "model.safetensors")
    weights = safetensors.numpy.load_file(path)
    weights.update(extra or {})
    tensors, dequantized = {}, {}
    for name, w in weights.items():
        module = name[:-len(".weight")]
        if name.endswith(".weight") and module.rsplit(".", 1)[-1] in LINEAR:
            t = quantize(w)
            for suffix, v in t.items():
                tensors[module + suffix] = v
            dequantized[name] = dequantize(t)
        else:
            tensors[name] = qf.plain(w.astype(np.float32))
    qf.save_safetensors(path, tensors)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    config["quantization_config"] = config_extra
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return dequantized


def transformers_argmax(folder, dequantized, tokens, **options):
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                              **options)
    state = model.state_dict()
    with torch.no_grad():
        for name, w in dequantized.items():
            state[name].copy_(torch.from_numpy(w))
        logits = model(torch.tensor([tokens[:-1]])).logits[0]
    return logits.argmax(-1).tolist()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def float_checkpoint(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"float_{request.param}")
    make_hf_checkpoint(str(d), max_positions=256, hidden=256, ffn=512, layers=2,
                       arch=request.param)
    return request.param, d


def tessera_predictions(tessera, model, out, *args, ranks=1):
    cmd = [tessera, "perplexity", "-m", model, "-f", TEXT, "--tokens", "129",
           "--predictions", str(out), *args]
    if ranks > 1:
        cmd = ["mpirun", "-np", str(ranks)] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, env=MPI_ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def emulated_gpu_top1(tessera, model, out, reference, *args):
    """Top-1 agreement with `reference` of `tessera perplexity` on the emulated GPU in f32 (with
    `args`), or None where this tessera was built without CUDA."""
    r = subprocess.run([tessera, "perplexity", "-m", str(model), "-f", TEXT, "--tokens", "129",
                        "--predictions", str(out), "--device", "emulator", "--dtype", "f32",
                        *args], capture_output=True, text=True, timeout=600)
    if "built without CUDA" in r.stderr:
        return None
    assert r.returncode == 0, r.stderr
    got = json.loads(out.read_text())
    return np.mean([a == b for a, b in zip(got["argmax"], reference)])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_quantized_checkpoint_predicts_as_transformers_on_its_dequantized_weights(
        tessera, float_checkpoint, fmt, tmp_path):
    import shutil
    arch, source = float_checkpoint
    folder = tmp_path / "ckpt"
    shutil.copytree(source, folder)
    dequantized = quantized_checkpoint(str(folder), arch, fmt)
    model = tmp_path / "model.h5"
    r = subprocess.run([tessera, "convert", "-i", str(folder), "-o", str(model)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "kept as it is" in r.stderr, r.stderr
    reference = None
    layouts = [("one rank", (), 1), ("one rank, one token per step", ("--decode-steps",), 1),
               ("tp2 x pp2", ("--tp", "2", "--pp", "2"), 4),
               ("tp2 x pp2, one token per step", ("--tp", "2", "--pp", "2", "--decode-steps"), 4)]
    if "act_order" in fmt:  # o_proj's 256 features in 64s: whole groups of 128 no rank holds
        layouts.append(("tp4", ("--tp", "4"), 4))
    for label, args, ranks in layouts:
        got = tessera_predictions(tessera, str(model), tmp_path / "p.json", *args, ranks=ranks)
        if reference is None:
            reference = transformers_argmax(str(source), dequantized, got["tokens"])
        assert len(got["argmax"]) == len(reference) == 128
        top1 = np.mean([a == b for a, b in zip(got["argmax"], reference)])
        print(f"{arch} {fmt} {label}: top-1 agreement with transformers {top1:.4f}")
        assert top1 >= 0.97, (arch, fmt, label, top1)
    # The GPU path (the CUDA emulator here), f32: the prompt decodes the blocks for the GEMM, and
    # act-order gathers its inputs on the GPU. (One format per architecture: the emulator is slow.)
    if fmt == ("gptq_g128_act_order" if arch == "llama" else "awq_g128"):
        top1 = emulated_gpu_top1(tessera, model, tmp_path / "gpu.json", reference)
        if top1 is None:
            return
        print(f"{arch} {fmt} emulated GPU: top-1 agreement with transformers {top1:.4f}")
        assert top1 >= 0.97, (arch, fmt, "emulated GPU", top1)


def transformers_fp8_cache_argmax(folder, dequantized, tokens, scales):
    """transformers' argmax with keys and values kept as an FP8 cache keeps them: after RoPE,
    each layer's k and v become torch's float8_e4m3fn of k / k_scale (v / v_scale), times the
    scale, before the attention reads them."""
    import torch
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.models.llama.modeling_llama import eager_attention_forward

    def fp8(x, scale):
        return (x / scale).to(torch.float8_e4m3fn).to(torch.float32) * scale

    def attention(module, query, key, value, attention_mask, **kwargs):
        k_scale, v_scale = scales[module.layer_idx]
        return eager_attention_forward(module, query, fp8(key, k_scale), fp8(value, v_scale),
                                       attention_mask, **kwargs)
    AttentionInterface.register("tessera_fp8_cache", attention)
    AttentionMaskInterface.register("tessera_fp8_cache", eager_mask)  # eager's causal mask
    return transformers_argmax(folder, dequantized, tokens,
                               attn_implementation="tessera_fp8_cache")


def test_an_fp8_kv_cache_keeps_keys_over_the_checkpoints_scales(tessera, float_checkpoint,
                                                               tmp_path):
    """--kv-cache-dtype fp8 keeps e4m3(k / k_scale) and e4m3(v / v_scale) with each layer's
    scales from an FP8 checkpoint (compressed-tensors' names, self_attn.k_scale and v_scale,
    calibrated as amax / 448 with room to spare). The keys are made 40 times the e4m3 range
    (k_proj times g, q_proj over g: the same scores), so that without the scales they saturate.
    The reference is transformers with its keys and values rounded through torch's float8 over
    the same scales; with the scales read, tessera predicts as it does, without them it does not."""
    import shutil

    import safetensors.numpy
    import torch
    import transformers
    arch, source = float_checkpoint
    folder = tmp_path / "ckpt"
    shutil.copytree(source, folder)
    path = str(folder / "model.safetensors")
    weights = safetensors.numpy.load_file(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    calibration = torch.tensor([list(range(2, 130))])  # 128 ids of the vocabulary (300)
    amax = {}

    def hook(name):
        def f(module, inputs, output):
            amax[name] = max(amax.get(name, 0.0), float(output.abs().max()))
        return f
    layers = model.model.layers
    for i, layer in enumerate(layers):
        layer.self_attn.k_proj.register_forward_hook(hook(f"k{i}"))
        layer.self_attn.v_proj.register_forward_hook(hook(f"v{i}"))
    with torch.no_grad():
        model(calibration)
    extra, scales = {}, []
    for i in range(len(layers)):
        gain = 40 * 448 / amax[f"k{i}"]
        p = f"model.layers.{i}.self_attn."
        for name in (p + "k_proj.weight", p + "k_proj.bias"):
            if name in weights:
                weights[name] = weights[name] * np.float32(gain)
        for name in (p + "q_proj.weight", p + "q_proj.bias"):
            if name in weights:
                weights[name] = weights[name] / np.float32(gain)
        scales.append((np.float32(2 * 40), np.float32(2 * amax[f"v{i}"] / 448)))
        extra[p + "k_scale"] = np.array(scales[-1][0], np.float32)
        extra[p + "v_scale"] = np.array(scales[-1][1], np.float32)
    safetensors.numpy.save_file(weights, path)
    amplified = tmp_path / "amplified"
    shutil.copytree(folder, amplified)
    dequantized = quantized_checkpoint(str(folder), arch, "fp8_channel", extra=extra)
    without = tmp_path / "without"
    shutil.copytree(amplified, without)
    quantized_checkpoint(str(without), arch, "fp8_channel")
    reference, agreement = None, {}
    for label, ckpt in (("scales", folder), ("no scales", without)):
        h5 = tmp_path / f"{label.replace(' ', '_')}.h5"
        r = subprocess.run([tessera, "convert", "-i", str(ckpt), "-o", str(h5)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        for layout, args, ranks in (("one rank", (), 1),
                                    ("tp2 x pp2, one token per step",
                                     ("--tp", "2", "--pp", "2", "--decode-steps"), 4)):
            if label == "no scales" and ranks > 1:
                continue
            got = tessera_predictions(tessera, str(h5), tmp_path / "p.json",
                                      "--kv-cache-dtype", "fp8", *args, ranks=ranks)
            if reference is None:
                reference = transformers_fp8_cache_argmax(str(amplified), dequantized,
                                                          got["tokens"], scales)
            top1 = np.mean([a == b for a, b in zip(got["argmax"], reference)])
            print(f"{arch} fp8 KV cache, {label}, {layout}: top-1 agreement {top1:.4f}")
            agreement[label, layout] = top1
    for layout in ("one rank", "tp2 x pp2, one token per step"):
        assert agreement["scales", layout] >= 0.97, agreement
    assert agreement["no scales", "one rank"] < 0.5, agreement
    # The GPU's cache (the CUDA emulator here), f32 activations, by prefill and one token per
    # step (the Llama only: the emulator is slow).
    if arch != "llama":
        return
    for args in ((), ("--decode-steps",)):
        top1 = emulated_gpu_top1(tessera, tmp_path / "scales.h5", tmp_path / "gpu.json", reference,
                                 "--kv-cache-dtype", "fp8", *args)
        if top1 is None:
            return
        print(f"{arch} fp8 KV cache, emulated GPU {' '.join(args)}: top-1 agreement {top1:.4f}")
        assert top1 >= 0.97, (arch, "emulated GPU", args, top1)
