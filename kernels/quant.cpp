// Block decoding and encoding of the quantized formats (layouts in kernels/quant.h).
#include "kernels/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/error.h"

namespace tessera {
namespace {

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

void put_f16(uint8_t* p, uint16_t h) { std::memcpy(p, &h, 2); }

// The smallest half >= v, or the largest half <= v; throws where the half would be infinite.
uint16_t half_at_least(float v) {
  uint16_t h = float_to_half(v);
  if (half_to_float(h) < v) h = (h & 0x8000u) ? (h == 0x8000u ? 1 : uint16_t(h - 1)) : uint16_t(h + 1);
  TESSERA_CHECK(std::isfinite(half_to_float(h)),
                "a block scale of " << v << " is beyond f16 (values too large to quantize)");
  return h;
}
uint16_t half_at_most(float v) { return uint16_t(half_at_least(-v) ^ 0x8000u); }

// q = round(x / step) clamped to [lo, hi]; 0 where the step is 0.
int level(float x, float step, int lo, int hi) {
  if (step == 0) return std::clamp(0, lo, hi);
  return std::clamp(int(std::lround(x / step)), lo, hi);
}

// ---- the 32-element formats -------------------------------------------------------------------

// The 4-bit (or low 4 bits of the 5-bit) codes of 32 elements, and the 5th bits.
void pack_nibbles(const int* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = uint8_t((q[j] & 15) | (q[j + 16] & 15) << 4);
}
void pack_fifth_bits(const int* q, uint8_t* qh) {
  uint32_t bits = 0;
  for (int i = 0; i < 32; ++i) bits |= uint32_t((q[i] >> 4) & 1) << i;
  std::memcpy(qh, &bits, 4);
}
int nibble(const uint8_t* qs, int i) { return i < 16 ? qs[i] & 15 : qs[i - 16] >> 4; }
int fifth_bit(const uint8_t* qh, int i) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  return int((bits >> i) & 1);
}

// The scale of a symmetric block of n elements with levels [-half, half - 1] (q4_0: 8, q5_0: 16,
// q6_k: 32) that covers every element within half a step: its sign maps the element of largest
// magnitude to the negative side, which has one level more.
float signed_scale(const float* x, int n, int half) {
  float big = 0, signed_big = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > big) {
      big = std::fabs(x[i]);
      signed_big = x[i];
    }
  float other = 0;  // the largest magnitude on the other side
  for (int i = 0; i < n; ++i)
    if ((x[i] > 0) != (signed_big > 0)) other = std::max(other, std::fabs(x[i]));
  const float d = std::max(big / (float(half) + 0.5f), other / (float(half) - 0.5f));
  return signed_big > 0 ? -d : d;
}

void encode_q8_0(const float* x, uint8_t* b) {
  float amax = 0;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
  const uint16_t dh = half_at_least(amax / 127);
  const float d = half_to_float(dh);
  put_f16(b, dh);
  for (int i = 0; i < 32; ++i) b[2 + i] = uint8_t(int8_t(level(x[i], d, -127, 127)));
}

template <int kHalf>  // q4_0: 8, q5_0: 16
void encode_symmetric(const float* x, uint8_t* b) {
  const float exact = signed_scale(x, 32, kHalf);
  const uint16_t dh = uint16_t(half_at_least(std::fabs(exact)) | (exact < 0 ? 0x8000u : 0));
  const float d = half_to_float(dh);
  put_f16(b, dh);
  int q[32];
  for (int i = 0; i < 32; ++i) q[i] = level(x[i], d, -kHalf, kHalf - 1) + kHalf;
  if (kHalf == 16) pack_fifth_bits(q, b + 2);
  pack_nibbles(q, b + (kHalf == 16 ? 6 : 2));
}

template <int kLevels>  // q4_1: 15, q5_1: 31
void encode_with_min(const float* x, uint8_t* b) {
  const auto [lo, hi] = std::minmax_element(x, x + 32);
  const uint16_t mh = half_at_most(*lo);
  const float m = half_to_float(mh);
  const uint16_t dh = half_at_least((*hi - m) / kLevels);
  const float d = half_to_float(dh);
  put_f16(b, dh);
  put_f16(b + 2, mh);
  int q[32];
  for (int i = 0; i < 32; ++i) q[i] = level(x[i] - m, d, 0, kLevels);
  if (kLevels == 31) pack_fifth_bits(q, b + 4);
  pack_nibbles(q, b + (kLevels == 31 ? 8 : 4));
}

void decode_q8_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  for (int i = 0; i < 32; ++i) y[i] = float(int8_t(b[2 + i])) * d;
}

template <int kHalf>
void decode_symmetric(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  const uint8_t* qs = b + (kHalf == 16 ? 6 : 2);
  for (int i = 0; i < 32; ++i) {
    const int q = nibble(qs, i) | (kHalf == 16 ? fifth_bit(b + 2, i) << 4 : 0);
    y[i] = d * float(q - kHalf);
  }
}

template <int kLevels>
void decode_with_min(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  const uint8_t* qs = b + (kLevels == 31 ? 8 : 4);
  for (int i = 0; i < 32; ++i) {
    const int q = nibble(qs, i) | (kLevels == 31 ? fifth_bit(b + 4, i) << 4 : 0);
    y[i] = d * float(q) + m;
  }
}

// ---- q4_k and q5_k ----------------------------------------------------------------------------

void unpack_k_scales(const uint8_t* s, int sub, int& sc, int& m) {
  if (sub < 4) {
    sc = s[sub] & 63;
    m = s[sub + 4] & 63;
  } else {
    sc = (s[sub + 4] & 15) | (s[sub - 4] >> 6) << 4;
    m = (s[sub + 4] >> 4) | (s[sub] >> 6) << 4;
  }
}

void pack_k_scales(const int* sc, const int* m, uint8_t* s) {
  for (int t = 0; t < 4; ++t) {
    s[t] = uint8_t(sc[t] | (sc[t + 4] >> 4) << 6);
    s[t + 4] = uint8_t(m[t] | (m[t + 4] >> 4) << 6);
    s[t + 8] = uint8_t((sc[t + 4] & 15) | (m[t + 4] & 15) << 4);
  }
}

// The code of element l of sub-block s.
int k_code(const uint8_t* qs, const uint8_t* qh, int s, int l) {
  const int q = (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 15;
  return qh ? q | ((qh[l] >> s) & 1) << 4 : q;
}

template <int kLevels>  // q4_k: 15, q5_k: 31
void encode_k(const float* x, uint8_t* b) {
  // Each sub-block's range [lo, hi] (lo <= 0: the format subtracts a non-negative min).
  float lo[8], hi[8], off_need_max = 0;
  for (int s = 0; s < 8; ++s) {
    const auto [mn, mx] = std::minmax_element(x + 32 * s, x + 32 * s + 32);
    lo[s] = std::min(0.0f, *mn);
    hi[s] = *mx;
    off_need_max = std::max(off_need_max, -lo[s]);
  }
  const uint16_t dminh = half_at_least(off_need_max / 63);
  const float dmin = half_to_float(dminh);
  int sc[8], m[8];
  float off[8], need[8], need_max = 0;
  for (int s = 0; s < 8; ++s) {
    m[s] = dmin == 0 ? 0 : std::min(63, int(std::ceil(-lo[s] / dmin)));
    off[s] = dmin * float(m[s]);
    need[s] = (hi[s] + off[s]) / kLevels;
    need_max = std::max(need_max, need[s]);
  }
  const uint16_t dh = half_at_least(need_max / 63);
  const float d = half_to_float(dh);
  for (int s = 0; s < 8; ++s)
    sc[s] = d == 0 ? 0 : std::clamp(int(std::ceil(need[s] / d)), 0, 63);
  put_f16(b, dh);
  put_f16(b + 2, dminh);
  pack_k_scales(sc, m, b + 4);
  uint8_t* qh = kLevels == 31 ? b + 16 : nullptr;
  uint8_t* qs = b + (kLevels == 31 ? 48 : 16);
  std::memset(qs, 0, 128);
  if (qh) std::memset(qh, 0, 32);
  for (int s = 0; s < 8; ++s) {
    const float step = d * float(sc[s]);
    for (int l = 0; l < 32; ++l) {
      const int q = level(x[32 * s + l] + off[s], step, 0, kLevels);
      qs[32 * (s / 2) + l] |= uint8_t((q & 15) << (4 * (s % 2)));
      if (qh) qh[l] |= uint8_t(((q >> 4) & 1) << s);
    }
  }
}

template <int kLevels>
void decode_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* qh = kLevels == 31 ? b + 16 : nullptr;
  const uint8_t* qs = b + (kLevels == 31 ? 48 : 16);
  for (int s = 0; s < 8; ++s) {
    int sc, m;
    unpack_k_scales(b + 4, s, sc, m);
    const float dl = d * float(sc), ml = dmin * float(m);
    for (int l = 0; l < 32; ++l) y[32 * s + l] = dl * float(k_code(qs, qh, s, l)) - ml;
  }
}

// ---- q6_k -------------------------------------------------------------------------------------

int q6_code(const uint8_t* b, int i) {
  const int h = i / 128, j = (i % 128) / 32, l = i % 32;
  const int low = (b[64 * h + 32 * (j % 2) + l] >> (4 * (j / 2))) & 15;
  const int high = (b[128 + 32 * h + l] >> (2 * j)) & 3;
  return low | high << 4;
}

void encode_q6_k(const float* x, uint8_t* b) {
  // Each 16-element sub-block's signed scale (levels -32..31), then one f16 d for the block and
  // an int8 multiple of it per sub-block, rounded away from zero.
  float scale[16], big = 0;
  for (int s = 0; s < 16; ++s) {
    scale[s] = signed_scale(x + 16 * s, 16, 32);
    big = std::max(big, std::fabs(scale[s]));
  }
  const uint16_t dh = half_at_least(big / 127);
  const float d = half_to_float(dh);
  std::memset(b, 0, 192);
  auto* scales = reinterpret_cast<int8_t*>(b + 192);
  for (int s = 0; s < 16; ++s) {
    const int mult = d == 0 ? 0 : std::min(127, int(std::ceil(std::fabs(scale[s]) / d)));
    scales[s] = int8_t(scale[s] < 0 ? -mult : mult);
    const float step = d * float(scales[s]);
    for (int l = 0; l < 16; ++l) {
      const int i = 16 * s + l, h = i / 128, j = (i % 128) / 32, t = i % 32;
      const int q = level(x[i], step, -32, 31) + 32;
      b[64 * h + 32 * (j % 2) + t] |= uint8_t((q & 15) << (4 * (j / 2)));
      b[128 + 32 * h + t] |= uint8_t((q >> 4) << (2 * j));
    }
  }
  put_f16(b + 208, dh);
}

void decode_q6_k(const uint8_t* b, float* y) {
  const float d = f16_at(b + 208);
  const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
  for (int s = 0; s < 16; ++s) {
    const float dl = d * float(scales[s]);
    for (int l = 0; l < 16; ++l) y[16 * s + l] = dl * float(q6_code(b, 16 * s + l) - 32);
  }
}

// ---- int4 groups (AWQ / GPTQ) and FP8
// ------------------------------------------------------------

// Blocks of N elements (N / 32 chunks of q4_0's nibble order): x = d * (q - z) over [min(x, 0),
// max(x, 0)] in 15 steps of d (f16, rounded up), z the code of 0.
template <int N>
void encode_i4(const float* x, uint8_t* b) {
  float lo = 0, hi = 0;
  for (int i = 0; i < N; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  const uint16_t dh = half_at_least((hi - lo) / 15);
  const float d = half_to_float(dh);
  const int z = d == 0 ? 0 : std::clamp(int(std::lround(-lo / d)), 0, 15);
  put_f16(b, dh);
  b[2] = uint8_t(z);
  b[3] = 0;
  for (int c = 0; c < N / 32; ++c) {
    int q[32];
    for (int i = 0; i < 32; ++i) q[i] = level(x[32 * c + i], d, -z, 15 - z) + z;
    pack_nibbles(q, b + 4 + 16 * c);
  }
}

template <int N>
void decode_i4(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  const int z = b[2];
  for (int i = 0; i < N; ++i) y[i] = d * float(nibble(b + 4 + 16 * (i / 32), i % 32) - z);
}

float f32_at(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

void encode_f8_e4m3(const float* x, uint8_t* b) {
  float amax = 0;
  for (int i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 448;
  std::memcpy(b, &d, 4);
  for (int i = 0; i < 128; ++i) b[4 + i] = d == 0 ? 0 : float_to_fp8_e4m3(x[i] / d);
}

void decode_f8_e4m3(const uint8_t* b, float* y) {
  const float d = f32_at(b);
  for (int i = 0; i < 128; ++i) y[i] = d * fp8_e4m3_to_float(b[4 + i]);
}

// The spacing of e4m3 values in the binade of code q (subnormals: 2^-9).
float fp8_e4m3_spacing(uint8_t q) {
  const int exp = (q >> 3) & 15;
  return std::ldexp(1.0f, std::max(exp, 1) - 10);
}

// ---- dispatch ---------------------------------------------------------------------------------

struct Codec {
  void (*decode)(const uint8_t*, float*);
  void (*encode)(const float*, uint8_t*);
};

Codec codec(DType type) {
  switch (type) {
    case DType::kQ8_0: return {decode_q8_0, encode_q8_0};
    case DType::kQ4_0: return {decode_symmetric<8>, encode_symmetric<8>};
    case DType::kQ4_1: return {decode_with_min<15>, encode_with_min<15>};
    case DType::kQ5_0: return {decode_symmetric<16>, encode_symmetric<16>};
    case DType::kQ5_1: return {decode_with_min<31>, encode_with_min<31>};
    case DType::kQ4_K: return {decode_k<15>, encode_k<15>};
    case DType::kQ5_K: return {decode_k<31>, encode_k<31>};
    case DType::kQ6_K: return {decode_q6_k, encode_q6_k};
    case DType::kI4G32:
      return {decode_i4<32>, encode_i4<32>};
    case DType::kI4G128:
      return {decode_i4<128>, encode_i4<128>};
    case DType::kF8E4M3:
      return {decode_f8_e4m3, encode_f8_e4m3};
    default: break;
  }
  TESSERA_ASSERT(false, dtype_name(type) << " is not a quantized format");
}

}  // namespace

void dequantize(DType type, const void* src, float* dst, int64_t n) {
  const Codec c = codec(type);
  const int64_t block = dtype_block_elements(type);
  const size_t bytes = dtype_block_bytes(type);
  dtype_bytes(type, n);  // (checks whole blocks)
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n / block; ++i) c.decode(p + size_t(i) * bytes, dst + i * block);
}

void quantize(DType type, const float* src, void* dst, int64_t n) {
  const Codec c = codec(type);
  const int64_t block = dtype_block_elements(type);
  const size_t bytes = dtype_block_bytes(type);
  dtype_bytes(type, n);
  for (int64_t i = 0; i < n; ++i)
    TESSERA_CHECK(std::isfinite(src[i]), "cannot quantize element " << i << " to "
                                                                    << dtype_name(type) << ": it is "
                                                                    << src[i]);
  auto* p = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n / block; ++i) c.encode(src + i * block, p + size_t(i) * bytes);
}

void quant_steps(DType type, const void* src, float* step, int64_t n) {
  const int64_t block = dtype_block_elements(type);
  const size_t bytes = dtype_block_bytes(type);
  dtype_bytes(type, n);
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n / block; ++i, p += bytes, step += block) {
    switch (type) {
      case DType::kQ4_K:
      case DType::kQ5_K: {
        const float d = f16_at(p);
        for (int s = 0; s < 8; ++s) {
          int sc, m;
          unpack_k_scales(p + 4, s, sc, m);
          std::fill(step + 32 * s, step + 32 * s + 32, std::fabs(d * float(sc)));
        }
        break;
      }
      case DType::kQ6_K: {
        const float d = f16_at(p + 208);
        for (int s = 0; s < 16; ++s)
          std::fill(step + 16 * s, step + 16 * s + 16, std::fabs(d * float(int8_t(p[192 + s]))));
        break;
      }
      case DType::kI4G128:
        std::fill(step, step + block, std::fabs(f16_at(p)));
        break;
      case DType::kF8E4M3:
        for (int j = 0; j < 128; ++j) step[j] = std::fabs(f32_at(p)) * fp8_e4m3_spacing(p[4 + j]);
        break;
      default:  // the 32-element formats: d first
        codec(type);
        std::fill(step, step + block, std::fabs(f16_at(p)));
    }
  }
}

}  // namespace tessera
