"""The published layouts of AWQ (AutoAWQ GEMM), GPTQ and FP8 checkpoints, written in numpy and
torch from their definitions (AutoAWQ's and vLLM's code): packing, unpacking, dequantizing, and a
safetensors writer. Shared by tests/reference/quantized_checkpoint_parity.py and
tests/e2e/test_quantized_checkpoints.py; nothing here comes from tessera."""
import json
import struct

import numpy as np
import torch

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def save_safetensors(path, tensors):
    """tensors: name -> (safetensors dtype, shape, bytes), written in the documented layout."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def plain(array):
    kinds = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int32): "I32"}
    return kinds[array.dtype], array.shape, np.ascontiguousarray(array).tobytes()


# ---- AWQ ------------------------------------------------------------------------------------

def pack_awq(values):
    """(rows, cols) codes 0..15 -> (rows, cols / 8) int32, AutoAWQ's GEMM order."""
    v = values.astype(np.uint32).reshape(values.shape[0], -1, 8)[:, :, AWQ_ORDER]
    words = np.zeros(v.shape[:2], np.uint32)
    for i in range(8):
        words |= v[:, :, i] << np.uint32(4 * i)
    return words.view(np.int32)


def unpack_awq(words):
    shifts = np.arange(0, 32, 4, dtype=np.uint32)
    nibbles = (words.view(np.uint32)[:, :, None] >> shifts) & 15  # (rows, words, nibble i)
    return nibbles[:, :, AWQ_REVERSE_ORDER].reshape(words.shape[0], -1).astype(np.int32)


def scales_f16(rng, shape):
    s = rng.uniform(1e-3, 0.05, shape)
    s.flat[0] = 6.1e-5  # (the smallest normal f16)
    s.flat[-1] = 3.0
    return s.astype(np.float16)


def awq_module(rng, out, inp, group):
    g = inp if group == -1 else group
    codes = rng.integers(0, 16, (inp, out))
    zeros = rng.integers(0, 16, (inp // g, out))
    scales = scales_f16(rng, (inp // g, out))
    tensors = {".qweight": plain(pack_awq(codes)), ".qzeros": plain(pack_awq(zeros)),
               ".scales": plain(scales)}
    return tensors, (codes, zeros)


def dequant_awq(t, group):
    qweight = np.frombuffer(t[".qweight"][2], np.int32).reshape(t[".qweight"][1])
    qzeros = np.frombuffer(t[".qzeros"][2], np.int32).reshape(t[".qzeros"][1])
    scales = np.frombuffer(t[".scales"][2], np.float16).reshape(t[".scales"][1])
    iw, iz = unpack_awq(qweight), unpack_awq(qzeros)
    g = iw.shape[0] if group == -1 else group
    iz = np.repeat(iz, g, axis=0)
    s = np.repeat(scales.astype(np.float32), g, axis=0)
    return ((iw - iz).astype(np.float32) * s).T  # (out, in)


# ---- GPTQ -----------------------------------------------------------------------------------

def pack_rows(values):
    """(rows, cols) codes -> (rows / 8, cols) int32: nibble i of word r is row 8r + i."""
    v = values.astype(np.uint32).reshape(-1, 8, values.shape[1])
    words = np.zeros((v.shape[0], v.shape[2]), np.uint32)
    for i in range(8):
        words |= v[:, i, :] << np.uint32(4 * i)
    return words.view(np.int32)


def pack_cols(values):
    """(rows, cols) codes -> (rows, cols / 8) int32: nibble i of word c is column 8c + i."""
    return pack_rows(values.T).T.copy()


def unpack_rows(words):
    shifts = np.arange(0, 32, 4, dtype=np.uint32)
    n = (words.view(np.uint32)[:, None, :] >> shifts[None, :, None]) & 15  # (r, i, cols)
    return n.reshape(-1, words.shape[1]).astype(np.int32)


def unpack_cols(words):
    return unpack_rows(words.T.copy()).T


def gptq_module(rng, out, inp, group, sym, legacy, g_idx=None):
    g = inp if group == -1 else group
    groups = inp // g
    codes = rng.integers(0, 16, (inp, out))
    if sym:
        zeros = np.full((groups, out), 8)
    else:
        zeros = rng.integers(1 if legacy else 0, 17 if legacy else 16, (groups, out))
    stored = (zeros - 1) & 15 if legacy else zeros
    tensors = {".qweight": plain(pack_rows(codes)), ".qzeros": plain(pack_cols(stored)),
               ".scales": plain(scales_f16(rng, (groups, out)))}
    if g_idx is not None:
        tensors[".g_idx"] = plain(g_idx.astype(np.int32))
    return tensors, (codes, stored)


def dequant_gptq(t, group, legacy):
    qweight = np.frombuffer(t[".qweight"][2], np.int32).reshape(t[".qweight"][1])
    qzeros = np.frombuffer(t[".qzeros"][2], np.int32).reshape(t[".qzeros"][1])
    scales = np.frombuffer(t[".scales"][2], np.float16).reshape(t[".scales"][1])
    iw = unpack_rows(qweight)  # (in, out)
    iz = unpack_cols(qzeros) + (1 if legacy else 0)  # (groups, out)
    g = iw.shape[0] if group == -1 else group
    g_idx = (np.frombuffer(t[".g_idx"][2], np.int32) if ".g_idx" in t
             else np.arange(iw.shape[0]) // g)
    return ((iw - iz[g_idx]).astype(np.float32) * scales.astype(np.float32)[g_idx]).T


# ---- FP8 ------------------------------------------------------------------------------------

def fp8_module(rng, out, inp, scale_shape, scale_dtype="F32", suffix=".weight_scale"):
    codes = rng.integers(0, 256, (out, inp)).astype(np.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0x3C  # no NaN
    scale = rng.uniform(1e-4, 2e-2, scale_shape).astype(np.float32)
    if scale_dtype == "BF16":
        bits = torch.from_numpy(scale).to(torch.bfloat16).view(torch.int16).numpy()
        scale_t = ("BF16", scale_shape, bits.tobytes())
    else:
        scale_t = plain(scale)
    return {".weight": ("F8_E4M3", (out, inp), codes.tobytes()), suffix: scale_t}


def dequant_fp8_compressed_tensors(t, suffix=".weight_scale"):
    """The FP8 weight dequantized by compressed-tensors' own dequantize (the library vLLM and
    llm-compressor use for these checkpoints): per tensor, per channel or 128 x 128 blocks."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    out, inp = t[".weight"][1]
    w = torch.frombuffer(bytearray(t[".weight"][2]), dtype=torch.uint8).view(torch.float8_e4m3fn)
    w = w.reshape(out, inp)
    sdtype, sshape, sdata = t[suffix]
    s = torch.frombuffer(bytearray(sdata), dtype=torch.bfloat16 if sdtype == "BF16"
                         else torch.float32).to(torch.float32)
    kw = dict(num_bits=8, type="float", symmetric=True)
    if s.numel() == 1:
        kw["strategy"] = "tensor"
    elif s.numel() == out:
        kw["strategy"], s = "channel", s.reshape(out, 1)
    else:
        rows, cols = sshape
        kw["strategy"], kw["block_structure"] = "block", [-(-out // rows), -(-inp // cols)]
        s = s.reshape(rows, cols)
    return dequantize(w, s, args=QuantizationArgs(**kw), dtype=torch.float32).numpy()


def dequant_fp8(t, suffix=".weight_scale"):
    dtype, shape, data = t[".weight"]
    out, inp = shape
    w = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(torch.float8_e4m3fn)
    w = w.to(torch.float32).reshape(out, inp)
    sdtype, sshape, sdata = t[suffix]
    s = torch.frombuffer(bytearray(sdata), dtype=torch.bfloat16 if sdtype == "BF16"
                         else torch.float32).to(torch.float32)
    if s.numel() == 1:
        full = s.reshape(1, 1).expand(out, inp)
    elif s.numel() == out:
        full = s.reshape(out, 1).expand(out, inp)
    else:  # blocks
        rows, cols = sshape
        bo, bi = -(-out // rows), -(-inp // cols)
        full = s.reshape(rows, cols).repeat_interleave(bo, 0)[:out].repeat_interleave(bi, 1)[:, :inp]
    return (w * full).numpy()




# ---- float weights quantized into each layout (round to nearest, as the quantizers store it) ----

def awq_from_float(w, group):
    """AWQ tensors of the float weight w (out, in): per group of input features, scale =
    (max - min) / 15 in f16 and zero = round(-min / scale), as AutoAWQ's pseudo-quantizer."""
    wt = w.T.astype(np.float32)  # (in, out)
    g = wt.shape[0] if group == -1 else group
    grouped = wt.reshape(-1, g, wt.shape[1])
    hi, lo = grouped.max(axis=1), grouped.min(axis=1)
    scales = (np.maximum(hi - lo, 1e-5) / 15).astype(np.float16)
    s = scales.astype(np.float32)
    zeros = np.clip(-np.round(lo / s), 0, 15).astype(np.int64)
    codes = np.clip(np.round(grouped / s[:, None, :]) + zeros[:, None, :], 0, 15)
    codes = codes.reshape(wt.shape).astype(np.int64)
    return {".qweight": plain(pack_awq(codes)), ".qzeros": plain(pack_awq(zeros)),
            ".scales": plain(scales)}


def gptq_from_float(w, group, sym, legacy=True, act_order_seed=None):
    """GPTQ tensors of w (out, in) by round to nearest (GPTQ's storage, without its error
    feedback): sym has zero 8 and scale 2 max|w| / 15, asym scale (max - min) / 15. With
    act_order_seed, the input features are put in groups in a random order (g_idx shuffled, each
    group g features), as desc_act's ordering by the Hessian does."""
    wt = w.T.astype(np.float32)  # (in, out)
    inp = wt.shape[0]
    g = inp if group == -1 else group
    g_idx = np.arange(inp) // g
    if act_order_seed is not None:
        g_idx = np.random.default_rng(act_order_seed).permutation(g_idx)
    groups = inp // g
    hi = np.stack([wt[g_idx == k].max(axis=0) for k in range(groups)])
    lo = np.stack([wt[g_idx == k].min(axis=0) for k in range(groups)])
    if sym:
        big = np.maximum(np.abs(hi), np.abs(lo))
        scales = (np.maximum(2 * big, 1e-5) / 15).astype(np.float16)
        zeros = np.full(scales.shape, 8, np.int64)
    else:
        scales = (np.maximum(hi - lo, 1e-5) / 15).astype(np.float16)
        zeros = np.clip(-np.round(lo / scales.astype(np.float32)), 1 if legacy else 0,
                        15).astype(np.int64)
    s = scales.astype(np.float32)
    codes = np.clip(np.round(wt / s[g_idx]) + zeros[g_idx], 0, 15).astype(np.int64)
    stored = (zeros - 1) & 15 if legacy else zeros
    return {".qweight": plain(pack_rows(codes)), ".qzeros": plain(pack_cols(stored)),
            ".scales": plain(scales), ".g_idx": plain(g_idx.astype(np.int32))}


def fp8_from_float(w, per_channel):
    """FP8 e4m3 tensors of w (out, in): a scale per output feature (or one) of amax / 448."""
    w = w.astype(np.float32)
    amax = np.abs(w).max(axis=1, keepdims=True) if per_channel else np.abs(w).max().reshape(1)
    scale = np.maximum(amax, 1e-12).astype(np.float32) / np.float32(448)
    codes = torch.from_numpy(w / scale).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    return {".weight": ("F8_E4M3", w.shape, codes.tobytes()), ".weight_scale": plain(scale)}
