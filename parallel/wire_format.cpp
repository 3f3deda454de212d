#include "parallel/wire_format.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/ops.h"

namespace tessera {
namespace {

// q8: a block of 32 values is [f16 scale d][32 x int8 q][bf16 kept][u8 index]: the block's
// largest magnitude is kept (in bf16) at its index, where q is 0, and every other value is d * q,
// d the smallest f16 >= the next largest magnitude / 127 (laid out as GGML's Q8_0 block, with the
// largest value taken out). Nothing throws: a NaN that is not the block's largest makes the rest
// of the block NaN (f32 would carry it on), and other magnitudes past the largest f16 scale
// (127 x 65504, inf among them) are clamped to it.
constexpr int64_t kQ8Block = 32;
constexpr int64_t kQ8BlockBytes = 2 + kQ8Block + 3;

int64_t q8_blocks(int64_t n) { return (n + kQ8Block - 1) / kQ8Block; }

// The smallest f16 value >= v (0 <= v <= 65504, or NaN kept).
uint16_t half_at_least(float v) {
  uint16_t h = float_to_half(v);
  if (half_to_float(h) < v) ++h;  // (positive: the next f16 up)
  return h;
}

void q8_encode_block(const float* src, int64_t n, uint8_t* dst) {
  float x[kQ8Block] = {};  // (a tail block padded with zeros)
  std::memcpy(x, src, size_t(n) * 4);
  int top = 0;
  for (int i = 1; i < kQ8Block; ++i)
    if (std::fabs(x[i]) > std::fabs(x[top])) top = i;
  const uint16_t kept = float_to_bf16(x[top]);
  x[top] = 0;
  float next = 0;
  for (float v : x) {
    if (std::isnan(v)) {  // (carried as NaN)
      next = v;
      break;
    }
    next = std::max(next, std::fabs(v));
  }
  const uint16_t d = half_at_least(std::isnan(next) ? next : std::min(next / 127.0f, 65504.0f));
  const float scale = half_to_float(d), inverse = scale > 0 ? 1.0f / scale : 0.0f;
  std::memcpy(dst, &d, 2);
  for (int i = 0; i < kQ8Block; ++i) {
    const float q = std::round(x[i] * inverse);  // (NaN when the block holds one: then 0)
    dst[2 + i] = uint8_t(int8_t(std::isnan(q) ? 0.0f : std::clamp(q, -127.0f, 127.0f)));
  }
  std::memcpy(dst + 2 + kQ8Block, &kept, 2);
  dst[kQ8BlockBytes - 1] = uint8_t(top);
}

void q8_decode_block(const uint8_t* src, float* dst) {
  uint16_t d, kept;
  std::memcpy(&d, src, 2);
  std::memcpy(&kept, src + 2 + kQ8Block, 2);
  const float scale = half_to_float(d);
  for (int i = 0; i < kQ8Block; ++i) dst[i] = scale * float(int8_t(src[2 + i]));
  dst[src[kQ8BlockBytes - 1] % kQ8Block] = bf16_to_float(kept);
}

// t's values as f32 on the host (t itself when it is that already).
Tensor host_f32(const Tensor& t) {
  Tensor f = t;
  if (t.dtype() != DType::kF32) {
    f = Tensor::empty(t.shape(), DType::kF32, t.device());
    ops::convert(t, f);
  }
  return f.device().is_cpu() ? f : f.to(Device::cpu());
}

// t = values (f32 on the host), in t's dtype on t's device.
void store_f32(const Tensor& values, Tensor& t) {
  if (values.raw() == t.raw()) return;
  const Tensor there = t.device().is_cpu() ? values : values.to(t.device());
  if (t.dtype() == DType::kF32)
    ops::copy(there, t);
  else
    ops::convert(there, t);
}

// The encoded bytes of t's values, on t's device (where t's communicator moves tensors).
Tensor encoded(WireFormat format, const Tensor& t) {
  const Tensor values = host_f32(t);
  Tensor bytes = Tensor::empty({wire_bytes(format, t.numel())}, DType::kU8);
  wire_encode(format, values.data<float>(), t.numel(), bytes.data<uint8_t>());
  return t.device().is_cpu() ? bytes : bytes.to(t.device());
}

// Whether t goes as it is: f32, or a bf16 t in bf16.
bool as_computed(WireFormat format, const Tensor& t) {
  return format == WireFormat::kF32 || (format == WireFormat::kBF16 && t.dtype() == DType::kBF16);
}

}  // namespace

std::string_view wire_format_name(WireFormat format) {
  switch (format) {
    case WireFormat::kF32:
      return "f32";
    case WireFormat::kBF16:
      return "bf16";
    case WireFormat::kQ8:
      return "q8";
  }
  TESSERA_FAIL("unknown wire format " << int(format));
}

WireFormat wire_format_from_name(std::string_view name) {
  for (WireFormat f : {WireFormat::kF32, WireFormat::kBF16, WireFormat::kQ8})
    if (wire_format_name(f) == name) return f;
  TESSERA_FAIL("--comm-dtype '" << name << "' is not one of f32, bf16, q8");
}

int64_t wire_bytes(WireFormat format, int64_t n) {
  switch (format) {
    case WireFormat::kF32:
      return 4 * n;
    case WireFormat::kBF16:
      return 2 * n;
    case WireFormat::kQ8:
      return q8_blocks(n) * kQ8BlockBytes;
  }
  TESSERA_FAIL("unknown wire format " << int(format));
}

void wire_encode(WireFormat format, const float* src, int64_t n, uint8_t* dst) {
  switch (format) {
    case WireFormat::kF32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case WireFormat::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t b = float_to_bf16(src[i]);
        std::memcpy(dst + 2 * i, &b, 2);
      }
      return;
    case WireFormat::kQ8:
      for (int64_t b = 0; b < q8_blocks(n); ++b)
        q8_encode_block(src + b * kQ8Block, std::min(kQ8Block, n - b * kQ8Block),
                        dst + b * kQ8BlockBytes);
      return;
  }
}

void wire_decode(WireFormat format, const uint8_t* src, int64_t n, float* dst, bool accumulate) {
  const auto put = [&](int64_t i, float v) { dst[i] = accumulate ? dst[i] + v : v; };
  switch (format) {
    case WireFormat::kF32:
      for (int64_t i = 0; i < n; ++i) {
        float v;
        std::memcpy(&v, src + 4 * i, 4);
        put(i, v);
      }
      return;
    case WireFormat::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        put(i, bf16_to_float(b));
      }
      return;
    case WireFormat::kQ8:
      for (int64_t b = 0; b < q8_blocks(n); ++b) {
        float block[kQ8Block];
        q8_decode_block(src + b * kQ8BlockBytes, block);
        for (int64_t i = b * kQ8Block; i < std::min(n, (b + 1) * kQ8Block); ++i)
          put(i, block[i - b * kQ8Block]);
      }
      return;
  }
}

void all_reduce_sum(Communicator& c, Tensor& t, WireFormat format) {
  if (c.size() == 1) return;
  if (format == WireFormat::kF32) {  // (a bf16 t is summed in f32: a bf16 sum rounds every step)
    if (t.dtype() == DType::kF32) return c.all_reduce(t, ReduceOp::kSum);
    Tensor wide = Tensor::empty(t.shape(), DType::kF32, t.device());
    ops::convert(t, wide);
    c.all_reduce(wide, ReduceOp::kSum);
    return ops::convert(wide, t);
  }
  const Tensor mine = encoded(format, t);
  const int64_t bytes = mine.numel(), n = t.numel();
  Tensor all = Tensor::empty({int64_t(c.size()) * bytes}, DType::kU8, t.device());
  c.all_gather(mine, all);
  if (!all.device().is_cpu()) all = all.to(Device::cpu());
  Tensor sum = Tensor::empty(t.shape(), DType::kF32);
  for (int r = 0; r < c.size(); ++r)
    wire_decode(format, all.data<uint8_t>() + r * bytes, n, sum.data<float>(), r > 0);
  store_f32(sum, t);
}

void send_in(WireFormat format, Communicator& c, const Tensor& t, int dst, int tag) {
  if (as_computed(format, t)) return c.send(t, dst, tag);
  c.send(encoded(format, t), dst, tag);
}

void recv_in(WireFormat format, Communicator& c, Tensor& t, int src, int tag) {
  if (as_computed(format, t)) return c.recv(t, src, tag);
  Tensor bytes = Tensor::empty({wire_bytes(format, t.numel())}, DType::kU8, t.device());
  c.recv(bytes, src, tag);
  if (!bytes.device().is_cpu()) bytes = bytes.to(Device::cpu());
  Tensor values = Tensor::empty(t.shape(), DType::kF32);
  wire_decode(format, bytes.data<uint8_t>(), t.numel(), values.data<float>(), false);
  store_f32(values, t);
}

}  // namespace tessera
