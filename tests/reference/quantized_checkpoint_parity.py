#!/usr/bin/env python3
"""Checks tessera's import of quantized Hugging Face checkpoints against dequantizations written
here in numpy (and torch's float8_e4m3fn) from the formats' published definitions: AutoAWQ's GEMM
packing (nibble i of a word holds output feature [0, 2, 4, 6, 1, 3, 5, 7][i], unpacked as vLLM's
and AutoAWQ's dequantize do with the reverse order [0, 4, 1, 5, 2, 6, 3, 7]), GPTQ's (codes packed
along the input features, zeros along the output features and stored minus one unless the
checkpoint format is gptq_v2; act-order's g_idx giving each input feature its group), and FP8 e4m3 weights times a per-tensor, per-channel or 128 x 128
block scale (FP8 against compressed-tensors' own dequantize, which installs from PyPI on the CPU,
and against the definition).

Each case crafts a small Llama checkpoint (hidden 256, ffn 512, 2 layers) whose every linear
weight is quantized with random codes, zero points and f16 scales (AWQ / GPTQ) or random e4m3
bytes and scales (FP8), converts it with `tessera convert`, and compares every weight as tessera
decodes it (tests/reference/model_weights_driver) with the numpy dequantization of the
checkpoint's tensors (an act-order weight put back in feature order by the input order tessera
stores with it, itself checked to be a permutation): equal bit for bit (the int4 products (q - z) * s are exact in float32; FP8's
e4m3(q) * scale is one float32 rounding in both). The packing written here is also unpacked here
and compared with the codes it packed. Variants that cannot be imported are refused in one line
naming them. Non-zero exit status on any failure; the last line is "N passed, M failed".
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import zlib

try:
    import numpy as np
    import torch
    import compressed_tensors  # noqa: F401 (the FP8 reference)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
except ImportError as e:  # pragma: no cover
    print(f"cannot run: {e}")
    sys.exit(1)

from quantized_formats import (awq_module, dequant_awq, dequant_fp8,
                               dequant_fp8_compressed_tensors, dequant_gptq, fp8_module,
                               gptq_module, plain, save_safetensors, unpack_awq, unpack_cols,
                               unpack_rows)

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, VOCAB = 256, 512, 2, 4, 2, 320


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL: {what}")


def linear_shapes():
    """(module path, out, in) of every linear weight."""
    head_dim = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        yield f"{p}.self_attn.q_proj", HEADS * head_dim, HIDDEN
        yield f"{p}.self_attn.k_proj", KV_HEADS * head_dim, HIDDEN
        yield f"{p}.self_attn.v_proj", KV_HEADS * head_dim, HIDDEN
        yield f"{p}.self_attn.o_proj", HIDDEN, HEADS * head_dim
        yield f"{p}.mlp.gate_proj", FFN, HIDDEN
        yield f"{p}.mlp.up_proj", FFN, HIDDEN
        yield f"{p}.mlp.down_proj", HIDDEN, FFN


def write_checkpoint(folder, rng, linear_tensors, quantization_config=None, extra_files=None):
    """A Llama checkpoint whose linear weights are linear_tensors[module] (name suffix ->
    (dtype, shape, bytes)); the rest plain. Returns nothing; writes config, tokenizer, weights."""
    os.makedirs(folder, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
              "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
              "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
              "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1,
              "hidden_act": "silu", "torch_dtype": "float16"}
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    for name, content in (extra_files or {}).items():
        with open(os.path.join(folder, name), "w") as f:
            json.dump(content, f)
    tensors = {
        "model.embed_tokens.weight": plain(rng.normal(0, 0.5, (VOCAB, HIDDEN)).astype(np.float16)),
        "model.norm.weight": plain(rng.normal(1, 0.1, HIDDEN).astype(np.float32)),
        "lm_head.weight": plain(rng.normal(0, 0.05, (VOCAB, HIDDEN)).astype(np.float16)),
    }
    for i in range(LAYERS):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{i}.{norm}.weight"] = plain(
                rng.normal(1, 0.1, HIDDEN).astype(np.float32))
    for module, parts in linear_tensors.items():
        for suffix, t in parts.items():
            tensors[module + suffix] = t
    save_safetensors(os.path.join(folder, "model.safetensors"), tensors)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, the quick brown fox. " * 20, "abc 123 def"], trainer)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>"}, f)


# ---- the cases ------------------------------------------------------------------------------

def tessera_weights(driver, model, names):
    r = subprocess.run([driver, model, *names], capture_output=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.decode())
    out, data = {}, r.stdout
    while data:
        nl = data.index(b"\n")
        head = json.loads(data[:nl])
        n = int(np.prod(head["shape"]))
        values = np.frombuffer(data[nl + 1:nl + 1 + 4 * n], np.float32).reshape(head["shape"])
        out[head["name"]] = (head["dtype"], values)
        data = data[nl + 1 + 4 * n:]
    return out


def canonical(module):
    return module[len("model."):] + ".weight"


def run_case(args, tally, name, build, dequant, want_dtype, quantization_config=None,
             extra_files=None, act_order=False):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    linear, unpacked_ok = {}, True
    for module, out, inp in linear_shapes():
        t, check = build(rng, out, inp)
        linear[module] = t
        if check is not None:  # the packing round trip
            unpacked_ok &= check(t)
    tally.check(unpacked_ok, f"{name}: the codes packed here unpack to themselves")
    folder = os.path.join(args.workdir, name)
    write_checkpoint(folder, rng, linear, quantization_config, extra_files)
    model = os.path.join(args.workdir, name + ".h5")
    r = subprocess.run([args.tessera, "convert", "-i", folder, "-o", model], capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0:
        tally.check(False, f"{name}: convert failed: {r.stderr.strip()}")
        return
    listed = json.loads(subprocess.run([args.driver, model, "--list"], capture_output=True,
                                       text=True, check=True).stdout)
    orders = [w["name"] for w in listed if w["name"].endswith(".input_order")]
    tally.check(bool(orders) == act_order, f"{name}: input orders written: {orders}")
    got = tessera_weights(args.driver, model, [canonical(m) for m in linear] + orders)
    for module, t in linear.items():
        dtype, values = got[canonical(module)]
        order = canonical(module)[:-len(".weight")] + ".input_order"
        if order in got:  # stored column j reads feature order[j]: back in feature order
            features = got[order][1].astype(np.int64)
            tally.check(np.array_equal(np.sort(features), np.arange(values.shape[1])),
                        f"{name} {module}: the input order is a permutation")
            natural = np.empty_like(values)
            natural[:, features] = values
            values = natural
        want = dequant(t)
        tally.check(dtype == want_dtype, f"{name} {module}: stored as {dtype}, not {want_dtype}")
        same = values.shape == want.shape and np.array_equal(values.view(np.uint32),
                                                            want.astype(np.float32).view(np.uint32))
        if not same and values.shape == want.shape:
            bad = np.argwhere(values != want)
            print(f"  {name} {module}: {len(bad)} values differ, first at {bad[0].tolist()}: "
                  f"{values[tuple(bad[0])]} vs {want[tuple(bad[0])]}")
        tally.check(same, f"{name} {module}: tessera's values equal the numpy dequantization")


def refused(args, tally, name, build, quantization_config, expect, extra_files=None,
            extra_tensors=None):
    rng = np.random.default_rng(7)
    linear = {m: build(rng, o, i)[0] for m, o, i in linear_shapes()}
    for module, parts in (extra_tensors or {}).items():
        linear.setdefault(module, {}).update(parts)
    folder = os.path.join(args.workdir, name)
    write_checkpoint(folder, rng, linear, quantization_config, extra_files)
    r = subprocess.run([args.tessera, "convert", "-i", folder, "-o",
                        os.path.join(args.workdir, name + ".h5")], capture_output=True, text=True,
                       timeout=300)
    lines = r.stderr.strip().splitlines()
    tally.check(r.returncode != 0 and len(lines) == 1 and expect in lines[0],
                f"{name}: refused in one line naming '{expect}': {r.stderr.strip()}")
    tally.check(not os.path.exists(os.path.join(args.workdir, name + ".h5")),
                f"{name}: no model file left")


def awq_case(group):
    def build(rng, out, inp):
        t, (codes, zeros) = awq_module(rng, out, inp, group)
        return t, lambda t: (np.array_equal(unpack_awq(np.frombuffer(t[".qweight"][2], np.int32)
                                                       .reshape(t[".qweight"][1])), codes) and
                             np.array_equal(unpack_awq(np.frombuffer(t[".qzeros"][2], np.int32)
                                                       .reshape(t[".qzeros"][1])), zeros))
    return build, lambda t: dequant_awq(t, group)


def gptq_case(group, sym, legacy, act_order=False):
    def build(rng, out, inp):
        g = inp if group == -1 else group
        g_idx = np.arange(inp) // g
        if act_order:
            g_idx = rng.permutation(g_idx)
        t, (codes, stored) = gptq_module(rng, out, inp, group, sym, legacy, g_idx)
        return t, lambda t: (np.array_equal(unpack_rows(np.frombuffer(t[".qweight"][2], np.int32)
                                                        .reshape(t[".qweight"][1])), codes) and
                             np.array_equal(unpack_cols(np.frombuffer(t[".qzeros"][2], np.int32)
                                                        .reshape(t[".qzeros"][1])), stored))
    return build, lambda t: dequant_gptq(t, group, legacy)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--driver", required=True)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    args.workdir = args.workdir or tmp.name
    os.makedirs(args.workdir, exist_ok=True)
    tally = Tally()

    def awq_config(group):
        return {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True,
                "version": "gemm"}

    def gptq_config(group, sym, fmt="gptq", desc_act=False):
        return {"quant_method": "gptq", "bits": 4, "group_size": group, "sym": sym,
                "desc_act": desc_act, "checkpoint_format": fmt}

    for group, dtype in ((128, "i4_g128"), (64, "i4_g32"), (-1, "i4_g128")):
        build, deq = awq_case(group)
        run_case(args, tally, f"awq_g{group}", build, deq, dtype, awq_config(group))
    # AutoAWQ's older quant_config.json beside the weights, no quantization_config
    build, deq = awq_case(32)
    run_case(args, tally, "awq_g32_quant_config_json", build, deq, "i4_g32", None,
             {"quant_config.json": {"zero_point": True, "q_group_size": 32, "w_bit": 4,
                                    "version": "GEMM"}})
    for group, sym, fmt, dtype in ((128, True, "gptq", "i4_g128"), (128, False, "gptq", "i4_g128"),
                                   (32, False, "gptq", "i4_g32"), (256, False, "gptq_v2", "i4_g128"),
                                   (-1, True, "gptq_v2", "i4_g128")):
        build, deq = gptq_case(group, sym, fmt == "gptq")
        run_case(args, tally, f"gptq_g{group}_{'sym' if sym else 'asym'}_{fmt}", build, deq, dtype,
                 gptq_config(group, sym, fmt))
    # Act-order: g_idx shuffled (each group still its g features), sym and asym, v1 and v2
    for group, sym, fmt, dtype in ((128, False, "gptq", "i4_g128"), (32, True, "gptq_v2", "i4_g32")):
        build, deq = gptq_case(group, sym, fmt == "gptq", act_order=True)
        run_case(args, tally, f"gptq_act_order_g{group}_{'sym' if sym else 'asym'}_{fmt}", build,
                 deq, dtype, gptq_config(group, sym, fmt, desc_act=True), act_order=True)
    # AutoGPTQ's quantize_config.json beside the weights
    build, deq = gptq_case(64, False, True)
    run_case(args, tally, "gptq_g64_quantize_config_json", build, deq, "i4_g32", None,
             {"quantize_config.json": {"bits": 4, "group_size": 64, "sym": False,
                                       "desc_act": False}})

    # FP8: compressed-tensors' own dequantize is the reference (it installs from PyPI on the CPU;
    # AutoAWQ's wheel pulls `datasets` and its model zoo when imported, GPTQModel has no wheel, so
    # int4 is checked against numpy from their published layouts); the library and the
    # definition (torch's float8_e4m3fn times the scale) must agree too.
    def fp8_reference(suffix=".weight_scale"):
        def dequant(t):
            lib = dequant_fp8_compressed_tensors(t, suffix)
            tally.check(np.array_equal(lib.view(np.uint32),
                                       dequant_fp8(t, suffix).astype(np.float32).view(np.uint32)),
                        "compressed-tensors' dequantize equals the definition")
            return lib
        return dequant

    fp8 = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic"}
    run_case(args, tally, "fp8_per_tensor", lambda rng, o, i: (fp8_module(rng, o, i, (1,)), None),
             fp8_reference(), "f8_e4m3", fp8)
    run_case(args, tally, "fbgemm_fp8_per_channel",
             lambda rng, o, i: (fp8_module(rng, o, i, (o, 1)), None), fp8_reference(), "f8_e4m3",
             {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0})

    def ct_module(rng, o, i):
        t = fp8_module(rng, o, i, (o, 1), "BF16")
        t[".input_scale"] = plain(np.array([0.02], np.float32))  # (static activations: not used)
        return t, None
    ct = {"quant_method": "compressed-tensors", "format": "float-quantized",
          "config_groups": {"group_0": {"targets": ["Linear"],
                                        "weights": {"num_bits": 8, "type": "float",
                                                    "strategy": "channel", "symmetric": True},
                                        "input_activations": {"num_bits": 8, "type": "float",
                                                              "strategy": "tensor"}}},
          "ignore": ["lm_head"]}
    run_case(args, tally, "compressed_tensors_fp8_channel_bf16_scales", ct_module, fp8_reference(),
             "f8_e4m3", ct)
    run_case(args, tally, "fp8_blocks_128x128",
             lambda rng, o, i: (fp8_module(rng, o, i, (-(-o // 128), -(-i // 128)), "F32",
                                           ".weight_scale_inv"), None),
             fp8_reference(".weight_scale_inv"), "f8_e4m3",
             dict(fp8, weight_block_size=[128, 128]))

    # An FP8 KV cache's scales, by each naming in use: compressed-tensors' (0-d, F32 or BF16),
    # ModelOpt's (on k_proj and v_proj) and older checkpoints' one kv_scale for both.
    def with_kv_scales(scales):
        def build(rng, o, i):
            return fp8_module(rng, o, i, (1,)), None
        linear = {}
        for name, value, dtype in scales:
            module, suffix = name.rsplit(".", 1)
            if dtype == "BF16":
                bits = torch.tensor(value, dtype=torch.float32).to(torch.bfloat16)
                t = ("BF16", (), bits.view(torch.int16).numpy().tobytes())
            else:
                t = plain(np.array(value, np.float32))
            linear.setdefault(module, {})["." + suffix] = t
        return build, linear

    def kv_scale_case(name, scales, want):
        build, extra = with_kv_scales(scales)
        rng = np.random.default_rng(11)
        linear = {m: build(rng, o, i)[0] for m, o, i in linear_shapes()}
        for module, parts in extra.items():
            linear.setdefault(module, {}).update(parts)
        folder = os.path.join(args.workdir, name)
        write_checkpoint(folder, rng, linear, fp8)
        model = os.path.join(args.workdir, name + ".h5")
        r = subprocess.run([args.tessera, "convert", "-i", folder, "-o", model],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            tally.check(False, f"{name}: convert failed: {r.stderr.strip()}")
            return
        listed = json.loads(subprocess.run([args.driver, model, "--list"], capture_output=True,
                                           text=True, check=True).stdout)
        kept = sorted(w["name"] for w in listed if w["name"].endswith("_scale"))
        tally.check(kept == sorted(want), f"{name}: KV-cache scales written: {kept}")
        if not want:
            tally.check("not kept" in r.stderr, f"{name}: convert says what it dropped: {r.stderr}")
            return
        got = tessera_weights(args.driver, model, list(want))
        for weight, value in want.items():
            dtype, values = got[weight]
            tally.check(dtype == "f32" and values.shape == (1,) and values[0] == np.float32(value),
                        f"{name} {weight}: {dtype} {values.tolist()}, not f32 [{value}]")

    p = "model.layers.{}.self_attn."
    kv_scale_case("kv_scales_compressed_tensors",
                  [(p.format(i) + kv, 0.75 + i + (kv == "v_scale") / 8, "F32" if i else "BF16")
                   for i in range(LAYERS) for kv in ("k_scale", "v_scale")],
                  {f"layers.{i}.self_attn.{kv}": 0.75 + i + (kv == "v_scale") / 8
                   for i in range(LAYERS) for kv in ("k_scale", "v_scale")})
    kv_scale_case("kv_scales_modelopt",
                  [(p.format(i) + proj, 2.5 * (i + 1), "F32") for i in range(LAYERS)
                   for proj in ("k_proj.k_scale", "v_proj.v_scale")],
                  {f"layers.{i}.self_attn.{kv}": 2.5 * (i + 1)
                   for i in range(LAYERS) for kv in ("k_scale", "v_scale")})
    # One name for both and one for the key in the same layer: the key's own wins.
    kv_scale_case("kv_scales_quark_and_twice",
                  [(p.format(i) + "kv_scale", 0.5, "F32") for i in range(LAYERS)] +
                  [(p.format(i) + "k_proj.output_scale", 9.0, "F32") for i in range(LAYERS)],
                  {f"layers.{i}.self_attn.{kv}": 9.0 if kv == "k_scale" else 0.5
                   for i in range(LAYERS) for kv in ("k_scale", "v_scale")})
    kv_scale_case("kv_scales_quark",
                  [(p.format(i) + proj + ".output_scale", 1.25, "F32") for i in range(LAYERS)
                   for proj in ("k_proj", "v_proj")],
                  {f"layers.{i}.self_attn.{kv}": 1.25
                   for i in range(LAYERS) for kv in ("k_scale", "v_scale")})
    # Scales per KV head (an FP8 cache takes one per layer): not kept, and convert says so.
    kv_scale_case("kv_scales_per_head_not_kept",
                  [(p.format(i) + "k_scale", [0.5] * KV_HEADS, "F32") for i in range(LAYERS)], {})
    kv_scale_case("kv_scales_one_for_both",
                  [(p.format(i) + "kv_scale", 0.375, "F32") for i in range(LAYERS)],
                  {f"layers.{i}.self_attn.{kv}": 0.375
                   for i in range(LAYERS) for kv in ("k_scale", "v_scale")})

    # What is refused, in one line naming it.
    build, extra = with_kv_scales([("model.layers.0.self_attn.k_scale", -1.0, "F32")])
    refused(args, tally, "kv_scale_negative",
            lambda rng, o, i: (build(rng, o, i)[0], None), fp8,
            "the KV-cache scale 'model.layers.0.self_attn.k_scale' must be a positive number",
            extra_tensors=extra)
    build, _ = awq_case(128)
    refused(args, tally, "awq_gemv_fast", build,
            {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": False,
             "version": "gemv_fast"}, "AWQ with zero_point=false and version gemv_fast is not "
                                      "supported")
    refused(args, tally, "gptq_8_bits", build, {"quant_method": "gptq", "bits": 8,
                                                "group_size": 128}, "GPTQ with bits=8")
    build, _ = awq_case(16)
    refused(args, tally, "awq_groups_of_16", build, awq_config(16),
            "groups of 16 input features are not supported")
    refused(args, tally, "fp8_e5m2", lambda rng, o, i: (
        dict(fp8_module(rng, o, i, (1,)), **{".weight": ("F8_E5M2", (o, i), bytes(o * i))}), None),
        fp8, "supported, not F8_E5M2")
    refused(args, tally, "compressed_tensors_int4", lambda rng, o, i: (fp8_module(rng, o, i, (1,)),
                                                                       None),
            {"quant_method": "compressed-tensors", "format": "pack-quantized",
             "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}}}},
            "int weights of 4 bits (format pack-quantized)")
    def unequal_groups(rng, o, i):
        g_idx = rng.permutation(np.arange(i) // 128)
        g_idx[np.flatnonzero(g_idx == 0)[0]] = 1
        return gptq_module(rng, o, i, 128, False, True, g_idx)[0], None
    refused(args, tally, "gptq_act_order_unequal_groups", unequal_groups,
            gptq_config(128, False, desc_act=True), "act-order with unequal groups is not supported")
    refused(args, tally, "bitsandbytes", build, {"quant_method": "bitsandbytes"},
            "quantization 'bitsandbytes' is not supported")

    print(f"{tally.passed} passed, {tally.failed} failed")
    sys.exit(1 if tally.failed else 0)


if __name__ == "__main__":
    main()
