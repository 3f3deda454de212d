#!/usr/bin/env python3
"""Checks tessera's GGUF reader against the `gguf` Python package.

tessera's side is tests/reference/gguf_dump_driver (see its header for the protocol). For each
file, every tensor tessera can dequantize is compared with gguf.quants.dequantize on the bytes
that gguf.GGUFReader finds (shape row-major, values to float32 rounding), and the metadata is
compared with GGUFReader's fields.

Files checked:
  * synthetic GGUFs written here with gguf.GGUFWriter (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
    Q5_1 made with gguf.quants.quantize; Q4_K, Q5_K, Q6_K as random blocks; metadata of every
    scalar type and arrays; alignments 32 and 64);
  * --gguf PATH, a real model file (e.g. SmolLM2-135M-Instruct.Q4_1.gguf), when given and present.

Blocks checked (the driver's --decode and --encode):
  * random blocks of every format, with scales drawn from all of f16 (zero, subnormal, the
    largest, negative): tessera's decoding equal to gguf.quants.dequantize, bit for bit;
  * tessera's quantizer on random data of many shapes: its blocks decode the same in gguf-py,
    bit for bit, and within half a step of the input (each block's range over its levels).

Exit status: 0 when everything matches, 1 on a mismatch, 1 also when numpy or gguf is missing (ctest
SKIP_RETURN_CODE). The last line is "N passed, M failed".
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from gguf import GGMLQuantizationType as Q
except ImportError as e:  # pragma: no cover
    print(f"skipping: {e}")
    sys.exit(1)


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


def stream_tensors(driver, path):
    """Yields (header dict, float32 array) for every tensor the driver dumps with --all."""
    proc = subprocess.Popen([driver, path, "--all"], stdout=subprocess.PIPE)
    try:
        while True:
            line = proc.stdout.readline()
            if not line:
                break
            head = json.loads(line)
            n = int(np.prod(head["shape"], dtype=np.int64))
            buf = proc.stdout.read(4 * n)
            if len(buf) != 4 * n:
                raise RuntimeError(f"driver output for {head['name']} is short")
            yield head, np.frombuffer(buf, dtype="<f4").reshape(head["shape"])
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise RuntimeError(f"driver failed on {path} with status {proc.returncode}")


def driver_json(driver, path, mode):
    out = subprocess.run([driver, path, mode], check=True, capture_output=True).stdout
    return json.loads(out)


def reference(t):
    """Row-major float32 values of a GGUFReader tensor, via gguf.quants.dequantize."""
    shape = [int(d) for d in reversed(t.shape)]
    if t.tensor_type == Q.BF16:  # GGUFReader may present BF16 as raw bytes or as 16-bit words
        ref = gguf.quants.dequantize(np.ascontiguousarray(t.data).view(np.uint8), Q.BF16)
    else:
        ref = gguf.quants.dequantize(np.ascontiguousarray(t.data), t.tensor_type)
    return np.asarray(ref, dtype=np.float32).reshape(shape)


def compare_file(driver, path, tally, verbose):
    reader = gguf.GGUFReader(path)
    supported = {Q.F32, Q.F16, Q.BF16} | set(QUANTIZED)
    listing = driver_json(driver, path, "--list")
    tally.check(len(listing["tensors"]) == len(reader.tensors),
                f"{path}: tensor count {len(listing['tensors'])} vs {len(reader.tensors)}")
    for mine, t in zip(listing["tensors"], reader.tensors):
        tally.check(mine["name"] == t.name and mine["type"] == t.tensor_type.name
                    and mine["shape"] == [int(d) for d in reversed(t.shape)]
                    and mine["offset"] == t.data_offset and mine["nbytes"] == t.n_bytes,
                    f"{path}: tensor info {mine} vs {t.name} {t.tensor_type.name} "
                    f"{list(t.shape)} @{t.data_offset} {t.n_bytes}")

    expected = [t for t in reader.tensors if t.tensor_type in supported]
    seen = 0
    worst = {}
    for (head, got), t in zip(stream_tensors(driver, path), expected):
        seen += 1
        ref = reference(t)
        what = f"{path}: {t.name} ({t.tensor_type.name})"
        if head["name"] != t.name or list(got.shape) != list(ref.shape):
            tally.check(False, f"{what}: driver gave {head['name']} {list(got.shape)}, "
                               f"expected shape {list(ref.shape)}")
            continue
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
        exact = bool(np.array_equal(got, ref))
        worst[t.tensor_type.name] = max(worst.get(t.tensor_type.name, 0.0), diff)
        tally.check(exact, f"{what}: max |diff| {diff:g} (max |ref| {scale:g})")
        if verbose:
            print(f"  {t.name:40s} {t.tensor_type.name:5s} {list(ref.shape)} "
                  f"{'exact' if exact else f'max diff {diff:g}'}")
    tally.check(seen == len(expected), f"{path}: driver dumped {seen} of {len(expected)} tensors")
    print(f"{os.path.basename(path)}: {seen} tensors compared; max |diff| by type: "
          + ", ".join(f"{k} {v:g}" for k, v in sorted(worst.items())))

    meta = driver_json(driver, path, "--meta")
    n_fields = 0
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        n_fields += 1
        try:
            want = field.contents()
        except UnicodeDecodeError:
            continue  # not valid UTF-8: the driver prints it with replacement characters
        if field.types and field.types[0] == gguf.GGUFValueType.BOOL:
            want = bool(want)
        elif (len(field.types) == 2 and field.types[0] == gguf.GGUFValueType.ARRAY
              and field.types[1] == gguf.GGUFValueType.BOOL):
            want = [bool(x) for x in want]
        tally.check(meta.get(name) == want,
                    f"{path}: metadata {name}: {str(meta.get(name))[:200]} vs {str(want)[:200]}")
    tally.check(len(meta) == n_fields, f"{path}: {len(meta)} metadata keys vs {n_fields}")


# The quantized formats tessera keeps: GGML type -> (elements, bytes) per block, and the byte
# offsets of its f16 scales.
QUANTIZED = {Q.Q8_0: (32, 34, [0]), Q.Q4_0: (32, 18, [0]), Q.Q4_1: (32, 20, [0, 2]),
             Q.Q5_0: (32, 22, [0]), Q.Q5_1: (32, 24, [0, 2]), Q.Q4_K: (256, 144, [0, 2]),
             Q.Q5_K: (256, 176, [0, 2]), Q.Q6_K: (256, 210, [208])}


def random_blocks(rng, qtype, n_blocks):
    """Random bytes as n_blocks blocks of qtype, their f16 scales finite and drawn from everywhere
    in f16: zero, subnormal, tiny, ordinary, the largest, both signs."""
    _, nbytes, scale_offsets = QUANTIZED[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    special = np.array([0.0, -0.0, 6e-8, 6.1e-5, 1e-3, 0.5, 1.0, -2.0, 65504.0, -65504.0],
                       dtype=np.float16)
    for off in scale_offsets:
        scales = (rng.standard_normal(n_blocks) * 10.0 ** rng.integers(-6, 4, n_blocks)).astype(np.float16)
        scales[np.isinf(scales)] = np.float16(1.0)
        pick = rng.random(n_blocks) < 0.3
        scales[pick] = rng.choice(special, int(pick.sum()))
        blocks[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def driver_codec(driver, mode, qtype, data):
    out = subprocess.run([driver, mode, qtype.name], input=data.tobytes(), check=True,
                         capture_output=True).stdout
    return np.frombuffer(out, dtype=np.float32 if mode == "--decode" else np.uint8)


def compare_blocks(driver, tally):
    rng = np.random.default_rng(11)
    for qtype, (elements, nbytes, _) in QUANTIZED.items():
        blocks = random_blocks(rng, qtype, 4000)
        ref = np.asarray(gguf.quants.dequantize(blocks, qtype), dtype=np.float32).reshape(-1)
        got = driver_codec(driver, "--decode", qtype, blocks)
        same = got.shape == ref.shape and bool(np.array_equal(got, ref, equal_nan=True))
        tally.check(same, f"random {qtype.name} blocks: decoded differently "
                          f"({np.count_nonzero(got != ref) if got.shape == ref.shape else 'size'})")

        # tessera's quantizer: blocks gguf-py decodes as tessera does, near the input
        rows = []
        for scale in (1e-4, 0.02, 1.0, 50.0):
            rows.append(rng.standard_normal(8 * elements) * scale)
            rows.append(rng.uniform(-scale, 3 * scale, 8 * elements))  # offset, one-sided
        rows.append(np.zeros(elements))
        rows.append(np.where(np.arange(elements) == 5, 9.0, 0.001))
        x = np.concatenate(rows).astype(np.float32)
        encoded = driver_codec(driver, "--encode", qtype, x).reshape(-1, nbytes)
        ref = np.asarray(gguf.quants.dequantize(encoded, qtype), dtype=np.float32).reshape(-1)
        mine = driver_codec(driver, "--decode", qtype, encoded)
        tally.check(np.array_equal(ref, mine), f"tessera's {qtype.name} blocks decode differently "
                                               "in gguf-py")
        # within half a step, where a step is at most what the block's (sub-block's) range over
        # the format's levels needs, rounded up to the scale's stored precision: f16, and in the
        # k formats a 6-bit (q6_k: 8-bit) multiple of the super-block's scale, which is at most
        # its largest sub-block's need over 63 (127)
        group = 16 if qtype == Q.Q6_K else 32
        levels = {Q.Q8_0: 254, Q.Q4_0: 15, Q.Q4_1: 15, Q.Q5_0: 31, Q.Q5_1: 31, Q.Q4_K: 15,
                  Q.Q5_K: 31, Q.Q6_K: 63}[qtype]
        g = x.reshape(-1, group)
        k = qtype in (Q.Q4_K, Q.Q5_K)
        lo = np.minimum(g.min(axis=1), 0) if k else g.min(axis=1)
        sym = qtype in (Q.Q8_0, Q.Q4_0, Q.Q5_0, Q.Q6_K)
        need = (2 * np.abs(g).max(axis=1) if sym else g.max(axis=1) - lo) / levels
        if elements == 256:
            per_block = need.reshape(-1, 256 // group)
            multiple = 127 if qtype == Q.Q6_K else 63
            need = need + np.repeat(per_block.max(axis=1), 256 // group) / multiple
            if k:  # the min is a 6-bit multiple of dmin too
                need = need + np.repeat((-lo).reshape(-1, 8).max(axis=1), 8) / 63 / levels
        # (f16's relative precision, and its absolute spacing 2^-24 below 2^-14, times the
        # multiple of a super-block scale)
        need = need * 1.002 + 2.0 ** -24 * (1 if elements == 32 else 128)
        err = np.abs(ref.reshape(-1, group) - g).max(axis=1)
        bound = 0.5 * need + 1e-7 * np.abs(g).max(axis=1)
        worst = float(np.max(np.where(need > 0, err / np.maximum(need, 1e-30), 0)))
        tally.check(bool(np.all(err <= bound)),
                    f"tessera's {qtype.name} quantization is off by {worst:.3f} steps somewhere")
    print(f"block codecs compared: {', '.join(q.name for q in QUANTIZED)}")


def write_synthetic(path, alignment, version_note):
    rng = np.random.default_rng(7 + alignment)
    w = gguf.GGUFWriter(path, arch="llama")
    if alignment != 32:
        w.add_custom_alignment(alignment)
    w.add_string("general.name", f"parity {version_note}")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 0.1)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 0.1)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "h\u00e9llo \u4e16\u754c")
    w.add_array("t.strs", ["<s>", "</s>", "a b", "\u0120the"])
    w.add_array("t.ints", [1, -2, 3])
    w.add_array("t.floats", [0.5, -1.25, 3.0])
    w.add_array("t.bools", [True, False, True])

    def matrix(rows, cols, scale=1.0):
        m = rng.standard_normal((rows, cols)).astype(np.float32) * np.float32(scale)
        m[0, :32] = 0.0  # an all-zero block (scale 0)
        m[-1, -32:] = np.linspace(-3, 5, 32, dtype=np.float32)  # min and max far apart
        return m

    w.add_tensor("f32", matrix(3, 64))
    w.add_tensor("f16", matrix(4, 32).astype(np.float16))
    w.add_tensor("vec_f32", rng.standard_normal(7).astype(np.float32))
    for name, qtype, shape, scale in [("bf16", Q.BF16, (5, 48), 1e3),
                                      ("q8_0", Q.Q8_0, (6, 96), 0.02),
                                      ("q4_0", Q.Q4_0, (8, 64), 1.0),
                                      ("q4_1", Q.Q4_1, (8, 128), 0.5),
                                      ("q5_0", Q.Q5_0, (4, 96), 0.1),
                                      ("q5_1", Q.Q5_1, (4, 64), 2.0),
                                      ("q8_0_3d", Q.Q8_0, (2, 3, 64), 1.0),
                                      ("q4_0_3d", Q.Q4_0, (3, 2, 32), 10.0)]:
        data = matrix(int(np.prod(shape[:-1])), shape[-1], scale).reshape(shape)
        w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    for qtype, rows in ((Q.Q4_K, 3), (Q.Q5_K, 2), (Q.Q6_K, 4)):
        _, nbytes, _ = QUANTIZED[qtype]
        blocks = random_blocks(rng, qtype, rows * 2).reshape(rows, 2 * nbytes)
        w.add_tensor(qtype.name.lower(), blocks, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--driver", required=True, help="path of the gguf_dump_driver executable")
    ap.add_argument("--gguf", help="a real GGUF file to compare as well (skipped if absent)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    tally = Tally()
    compare_blocks(args.driver, tally)
    with tempfile.TemporaryDirectory(prefix="tessera_gguf_parity_") as tmp:
        for alignment in (32, 64):
            path = os.path.join(tmp, f"synthetic_a{alignment}.gguf")
            write_synthetic(path, alignment, f"alignment {alignment}")
            compare_file(args.driver, path, tally, args.verbose)
    if args.gguf:
        if os.path.exists(args.gguf):
            compare_file(args.driver, args.gguf, tally, args.verbose)
        else:
            print(f"note: {args.gguf} not present; compared the synthetic files only")
    print(f"{tally.passed} passed, {tally.failed} failed")
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
