// CPU implementations of kernels/ops.h (ops::cpu: the CPU backend, kernels/cpu/cpu_backend.cpp).
#include <cblas.h>
#include <omp.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>
#include <vector>

#include "kernels/cpu/ops_cpu.h"
#include "kernels/cpu/quant_linear.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/skinny_gemm.h"
#include "kernels/dtype.h"

namespace tessera::ops::cpu {
namespace {

void check_cpu_f32(const Tensor& t, const char* what) {
  TESSERA_ASSERT(t.defined(), what << " is undefined");
  TESSERA_ASSERT(t.device().is_cpu(), what << " is on " << t.device().str() << ", not the CPU");
  TESSERA_ASSERT(t.dtype() == DType::kF32, what << " is " << dtype_name(t.dtype()) << ", not f32");
}

#if defined(__AVX2__) && defined(__FMA__)
// e^x for 8 lanes: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by Cephes' degree-7 polynomial
// (within 2 ulp of std::exp over the range softmax uses), times 2^n; below -87.3 it is 0.
inline __m256 exp256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654f), hi = _mm256_set1_ps(88.37626f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}
#endif

}  // namespace

bool computes_on(DType weight) {
  return weight == DType::kF32 || weight == DType::kF16 || weight == DType::kBF16 ||
         dtype_is_quantized(weight);
}

void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  linear_group(x, {{&w, bias, &y}});
}

void linear_group(const Tensor& x, const std::vector<LinearPart>& parts) {
  check_cpu_f32(x, "linear input");
  const int64_t k = x.dim(-1), m = x.numel() / k;
  int64_t total = 0;  // rows of every part's weight, one after another
  bool quantized = false;
  for (const LinearPart& p : parts) {
    const Tensor& w = *p.w;
    check_cpu_f32(*p.y, "linear output");
    TESSERA_ASSERT(w.defined() && w.device().is_cpu() && computes_on(w.dtype()),
                   "linear weight of " << dtype_name(w.dtype()) << " on " << w.device().str());
    TESSERA_ASSERT(w.ndim() == 2 && w.dim(1) == k, "linear: input " << shape_str(x.shape())
                                                                    << " vs weight "
                                                                    << shape_str(w.shape()));
    TESSERA_ASSERT(p.y->numel() == m * w.dim(0), "linear: output " << shape_str(p.y->shape())
                                                                   << " for m=" << m
                                                                   << " n=" << w.dim(0));
    total += w.dim(0);
    quantized |= integer_kernel_for(w.dtype());  // (f8_e4m3 takes no activation blocks)
  }
  if (m == 0) return;
  // One thread pool: OpenMP splits the output features, each thread runs single-threaded
  // OpenBLAS on its slice. (OpenBLAS's own pool and OpenMP's fighting over 2 cores made decode
  // 4x slower than this.)
  static const bool single_threaded_blas = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)single_threaded_blas;
  const float* px = x.data<float>();
  // Against quantized weights: x's activation blocks, made once for every part (each thread
  // its share of x's rows) before any thread uses them.
  std::vector<ActivationBlock> act;
  if (quantized && m <= kIntegerMaxRows && integer_kernels_available()) {
    act.resize(size_t(m * k / 32));
  }
  // Each thread takes an even share of all the parts' rows, one part after another. (Pieces taken
  // dynamically, tried on 2026-12-06, were 5-10% slower at decode.)
#pragma omp parallel
  {
    if (!act.empty()) {
#pragma omp for schedule(static)
      for (int64_t r = 0; r < m; ++r) quantize_activations(px + r * k, k, act.data() + r * k / 32);
    }
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t per = (total + threads - 1) / threads;
    const int64_t g0 = std::min(total, t * per), g1 = std::min(total, g0 + per);
    int64_t first = 0;  // the part's first row among all
    for (const LinearPart& p : parts) {
      const Tensor& w = *p.w;
      const int64_t n = w.dim(0);
      const int64_t n0 = std::clamp<int64_t>(g0 - first, 0, n);
      const int64_t n1 = std::clamp<int64_t>(g1 - first, 0, n);
      first += n;
      if (n1 <= n0) continue;
      float* py = p.y->data<float>();
      if (w.dtype() != DType::kF32) {  // weights as stored (kernels/cpu/quant_linear.h)
        weight_rows_linear(px, act.empty() ? nullptr : act.data(), m, k, w, n0, n1, py, n);
      } else if (m <= kSkinnyMaxRows) {  // decode batches: stream the weight once, no packing
        skinny_gemm_nt(px, m, k, w.data<float>(), n0, n1, py, n);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n1 - n0), int(k), 1.0f, px,
                    int(k), w.data<float>() + n0 * k, int(k), 0.0f, py + n0, int(n));
      }
    }
  }
  for (const LinearPart& p : parts) {
    if (p.bias == nullptr) continue;
    const int64_t n = p.w->dim(0);
    check_cpu_f32(*p.bias, "linear bias");
    TESSERA_ASSERT(p.bias->numel() == n, "linear: bias " << shape_str(p.bias->shape()));
    const float* b = p.bias->data<float>();
    float* out = p.y->data<float>();
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) out[r * n + c] += b[c];
  }
}

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  check_cpu_f32(x, "rms_norm input");
  check_cpu_f32(weight, "rms_norm weight");
  check_cpu_f32(y, "rms_norm output");
  const int64_t d = x.dim(-1), m = x.numel() / d;
  TESSERA_ASSERT(weight.numel() == d && y.numel() == x.numel(), "rms_norm shapes");
  const float* in = x.data<float>();
  const float* w = weight.data<float>();
  float* out = y.data<float>();
#pragma omp parallel for if (m > 4)
  for (int64_t r = 0; r < m; ++r) {
    const float* row = in + r * d;
    double ss = 0;  // double: the sum of 4096+ squares is where float32 rounding would show
    for (int64_t i = 0; i < d; ++i) ss += double(row[i]) * row[i];
    const float inv = float(1.0 / std::sqrt(ss / double(d) + double(eps)));
    float* o = out + r * d;
    for (int64_t i = 0; i < d; ++i) o[i] = row[i] * inv * w[i];
  }
}

void add_inplace(Tensor& a, const Tensor& b) {
  check_cpu_f32(a, "add target");
  check_cpu_f32(b, "add operand");
  TESSERA_ASSERT(a.numel() == b.numel(),
                 "add: " << shape_str(a.shape()) << " vs " << shape_str(b.shape()));
  float* pa = a.data<float>();
  const float* pb = b.data<float>();
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) pa[i] += pb[i];
}

void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) {
  TESSERA_ASSERT(
      table.defined() && table.device().is_cpu() && computes_on(table.dtype()),
      "embedding table of " << dtype_name(table.dtype()) << " on " << table.device().str());
  check_cpu_f32(out, "embedding output");
  const int64_t vocab = table.dim(0), d = table.dim(1);
  TESSERA_ASSERT(out.numel() == int64_t(ids.size()) * d, "embedding output shape");
  const size_t row_bytes = dtype_bytes(table.dtype(), d);
  const auto* t = static_cast<const uint8_t*>(table.raw());
  float* o = out.data<float>();
  for (size_t i = 0; i < ids.size(); ++i) {
    TESSERA_CHECK(ids[i] >= 0 && ids[i] < vocab,
                  "token id " << ids[i] << " is outside the vocabulary (size " << vocab << ")");
    convert_to_f32(table.dtype(), t + size_t(ids[i]) * row_bytes, o + int64_t(i) * d, size_t(d));
  }
}

void gather_columns(const Tensor& x, const Tensor& order, Tensor& y) {
  check_cpu_f32(x, "gather_columns input");
  check_cpu_f32(y, "gather_columns output");
  const int64_t m = x.dim(0), k = x.dim(1), n = order.dim(0);
  const int32_t* o = order.data<int32_t>();
  for (int64_t j = 0; j < n; ++j)
    TESSERA_ASSERT(o[j] >= -1 && o[j] < k, "gather_columns: column " << o[j] << " of " << k);
  const float* px = x.data<float>();
  float* py = y.data<float>();
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) py[r * n + j] = o[j] < 0 ? 0.0f : px[r * k + o[j]];
}

void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) {
  check_cpu_f32(gate, "swiglu gate");
  check_cpu_f32(up, "swiglu up");
  check_cpu_f32(out, "swiglu output");
  TESSERA_ASSERT(gate.numel() == up.numel() && out.numel() == up.numel(), "swiglu shapes");
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  float* o = out.data<float>();
  // Row by row (the last dimension), eight lanes at a time and the row's tail one by one, so
  // which code computes an element depends only on its place in its row, not on the batch.
  const int64_t f = gate.ndim() > 0 ? gate.dim(-1) : 1, rows = f ? gate.numel() / f : 0;
#pragma omp parallel for if (rows > 4)
  for (int64_t r = 0; r < rows; ++r) {
    const float* gr = g + r * f;
    const float* ur = u + r * f;
    float* orow = o + r * f;
    int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (; j + 8 <= f; j += 8) {
      const __m256 gv = _mm256_loadu_ps(gr + j);
      const __m256 e = exp256(_mm256_sub_ps(zero, gv));  // e^-g
      _mm256_storeu_ps(orow + j, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)),
                                               _mm256_loadu_ps(ur + j)));
    }
#endif
    for (; j < f; ++j) orow[j] = gr[j] / (1.0f + std::exp(-gr[j])) * ur[j];
  }
}

void rope_inplace(Tensor& x, const Tensor& position_ids, const Tensor& frequencies) {
  check_cpu_f32(x, "rope input");
  check_cpu_f32(frequencies, "rope frequencies");
  TESSERA_ASSERT(x.ndim() == 3,
                 "rope expects (tokens, heads, head_dim), got " << shape_str(x.shape()));
  const int64_t m = x.dim(0), heads = x.dim(1), d = x.dim(2), half = d / 2;
  TESSERA_ASSERT(position_ids.numel() == m && frequencies.numel() == half &&
                     position_ids.dtype() == DType::kI32,
                 "rope: positions/frequencies do not match " << shape_str(x.shape()));
  const int32_t* positions = position_ids.data<int32_t>();
  const float* inv_freq = frequencies.data<float>();
  float* p = x.data<float>();
#pragma omp parallel for if (m > 4)
  for (int64_t r = 0; r < m; ++r) {
    std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(positions[size_t(r)]) * inv_freq[size_t(i)];
      c[size_t(i)] = std::cos(angle);
      s[size_t(i)] = std::sin(angle);
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = p + (r * heads + h) * d;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[size_t(i)] - b * s[size_t(i)];
        v[i + half] = b * c[size_t(i)] + a * s[size_t(i)];
      }
    }
  }
}

void causal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                      const std::vector<int32_t>& q_positions, float scale, Tensor& out) {
  const int64_t m = q.dim(0);
  TESSERA_ASSERT(int64_t(q_positions.size()) == m && out.numel() == q.numel(), "attention shapes");
  for (int64_t r = 1; r < m; ++r)
    TESSERA_ASSERT(q_positions[size_t(r)] == q_positions[0] + r,
                   "causal_attention expects consecutive query positions");
  if (m == 0) return;
  // One block of keys, query row r seeing keys 0 .. q_positions[r] = r + q_positions[0].
  AttentionState state = AttentionState::empty(m, q.dim(1), q.dim(2));
  cpu::attention_accumulate(q, k, v, q_positions[0], scale, state);
  cpu::attention_finish(state, out);
}

namespace {

// s[j] = e^(s[j] - shift) for j < n, and their sum (added in order, in double). Which code
// computes entry j depends only on j and n.
inline double exp_shifted(float* s, int64_t n, float shift) {
  int64_t j = 0;
  double sum = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 sh = _mm256_set1_ps(shift);
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(s + j, exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), sh)));
  for (int64_t t = 0; t < j; ++t) sum += s[t];
#endif
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - shift);
    sum += s[j];
  }
  return sum;
}

// Keys this far ahead are prefetched while the current ones are used: one block of 16 (the
// default block size), so the next block's rows are on their way when its first key is needed.
inline constexpr int64_t kKeysAhead = 16;
// rows[a] = row_at(j + a) for four keys from j, and a prefetch of the rows kKeysAhead later.
template <typename T, typename RowAt>
inline void four_rows(RowAt row_at, int64_t j, int64_t n_keys, int64_t d, const T* (&rows)[4]) {
  for (int64_t a = 0; a < 4; ++a) rows[a] = row_at(j + a);
  if (j + 4 + kKeysAhead <= n_keys)
    for (int64_t a = 0; a < 4; ++a) {
      const char* ahead = reinterpret_cast<const char*>(row_at(j + kKeysAhead + a));
      for (int64_t b = 0; b < d * int64_t(sizeof(T)); b += 64) __builtin_prefetch(ahead + b);
    }
}

// K/V rows are float32, float16 or float8 e4m3 (a KV cache kept in lower precision), widened on
// load; an e4m3 code's scale is applied by the caller.
inline float widen(float x) {
  return x;
}
inline float widen(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return half_to_float(h);
#endif
}
// Every e4m3 code's value, indexed by the code.
const std::array<float, 256> kE4M3Values = [] {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) t[size_t(i)] = fp8_e4m3_to_float(uint8_t(i));
  return t;
}();
inline float widen(uint8_t code) {
  return kE4M3Values[code];
}
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define TESSERA_ATTENTION_SIMD 1
inline __m256 load8(const float* p) {
  return _mm256_loadu_ps(p);
}
inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load8(const uint8_t* p) {
  const __m256i codes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm256_i32gather_ps(kE4M3Values.data(), codes, 4);
}
#endif

// dots[a] = q . k[a] for A keys (1 or 4): eight lanes over d (then the lanes summed), the tail
// one by one. The same operations for a key whatever else is computed.
template <int A, typename T>
inline void dots(const float* q, const T* const* k, int64_t d, float* out) {
  int64_t i = 0;
  float s[A] = {};
#if defined(TESSERA_ATTENTION_SIMD)
  __m256 acc[A];
  for (int a = 0; a < A; ++a) acc[a] = _mm256_setzero_ps();
  for (; i + 8 <= d; i += 8) {
    const __m256 qv = _mm256_loadu_ps(q + i);
    for (int a = 0; a < A; ++a) acc[a] = _mm256_fmadd_ps(qv, load8(k[a] + i), acc[a]);
  }
  for (int a = 0; a < A; ++a) s[a] = hsum256(acc[a]);
#endif
  for (; i < d; ++i)
    for (int a = 0; a < A; ++a) s[a] = std::fma(q[i], widen(k[a][i]), s[a]);
  for (int a = 0; a < A; ++a) out[a] = s[a];
}

// o += w[0] v[0] + ... + w[A-1] v[A-1], each o[i] adding the keys one by one, in order.
template <int A, typename T>
inline void add_weighted(float* o, const float* w, const T* const* v, int64_t d) {
  int64_t i = 0;
#if defined(TESSERA_ATTENTION_SIMD)
  __m256 wv[A];
  for (int a = 0; a < A; ++a) wv[a] = _mm256_set1_ps(w[a]);
  for (; i + 8 <= d; i += 8) {
    __m256 acc = _mm256_loadu_ps(o + i);
    for (int a = 0; a < A; ++a) acc = _mm256_fmadd_ps(wv[a], load8(v[a] + i), acc);
    _mm256_storeu_ps(o + i, acc);
  }
#endif
  for (; i < d; ++i) {
    float acc = o[i];
    for (int a = 0; a < A; ++a) acc = std::fma(w[a], widen(v[a][i]), acc);
    o[i] = acc;
  }
}

// Query heads [0, heads) of one row that share a KV head (their q, mx, sum and o are contiguous,
// head after head), over the keys found through key_at(j) (a pair of K and V row pointers of
// element type T). Each key's rows are loaded once for all the heads (the later heads find them
// in L1). A value row counts value_scale times its elements. scores holds heads x n_keys floats
// and rescale `heads` floats (scratch).
template <typename T, typename KeyAt>
inline void accumulate_heads(const float* q, int64_t heads, int64_t n_keys, int64_t d, float scale,
                             float value_scale, KeyAt key_at, float* scores, float* rescale,
                             float* mx, float* sum_out, float* o) {
  // Four keys at a time: four independent dot products keep the FMA units busy where one would
  // wait on its own additions. Which code computes key j depends only on j and n_keys, so a
  // row's scores do not depend on the batch or on where its keys are stored.
  int64_t j = 0;
  for (; j + 4 <= n_keys; j += 4) {
    const T* k[4];
    four_rows<T>([&](int64_t t) { return key_at(t).first; }, j, n_keys, d, k);
    for (int64_t g = 0; g < heads; ++g) {
      float dot[4];
      dots<4>(q + g * d, k, d, dot);
      float* sc = scores + g * n_keys + j;
      for (int a = 0; a < 4; ++a) sc[a] = dot[a] * scale;
    }
  }
  for (; j < n_keys; ++j) {
    const T* k = key_at(j).first;
    for (int64_t g = 0; g < heads; ++g) {
      float dot;
      dots<1>(q + g * d, &k, d, &dot);
      scores[g * n_keys + j] = dot * scale;
    }
  }
  for (int64_t g = 0; g < heads; ++g) {
    float* sc = scores + g * n_keys;
    float block_max = -INFINITY;
    for (int64_t t = 0; t < n_keys; ++t) block_max = std::max(block_max, sc[t]);
    const float new_max = std::max(mx[g], block_max);
    rescale[g] = std::exp(mx[g] - new_max);  // 0 when nothing was seen
    for (int64_t i = 0; i < d; ++i) o[g * d + i] *= rescale[g];
    const double sum = exp_shifted(sc, n_keys, new_max);  // the keys' weights
    sum_out[g] = float(double(sum_out[g]) * rescale[g] + sum);
    mx[g] = new_max;
    if (value_scale != 1.0f)
      for (int64_t t = 0; t < n_keys; ++t) sc[t] *= value_scale;
  }
  // o += weight_j v_j, four keys per pass over o (one load and store of o per four keys
  // instead of per key).
  for (j = 0; j + 4 <= n_keys; j += 4) {
    const T* v[4];
    four_rows<T>([&](int64_t t) { return key_at(t).second; }, j, n_keys, d, v);
    for (int64_t g = 0; g < heads; ++g) add_weighted<4>(o + g * d, scores + g * n_keys + j, v, d);
  }
  for (; j < n_keys; ++j) {
    const T* v = key_at(j).second;
    for (int64_t g = 0; g < heads; ++g) add_weighted<1>(o + g * d, scores + g * n_keys + j, &v, d);
  }
}

// Query heads per work item: a whole GQA group, so that one thread reads a KV head's keys
// from memory once for all the query heads that share it, unless that leaves too few items to
// keep the threads busy.
int64_t heads_per_item(int64_t rows, int64_t hq, int64_t hkv) {
  return rows * hkv >= 4 * int64_t(omp_get_max_threads()) ? hq / hkv : 1;
}

// fn(r, h, scores, rescale) for every query row r of m and every work item of per_item query
// heads from head h, over the threads (dynamically: rows see different numbers of keys), each
// thread with scratch for per_item heads of up to most_keys keys.
template <typename Fn>
void for_each_work_item(int64_t m, int64_t hq, int64_t per_item, int64_t most_keys, Fn fn) {
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(most_keys * per_item)),
        rescale(static_cast<size_t>(per_item));
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t r = 0; r < m; ++r)
      for (int64_t item = 0; item < hq / per_item; ++item)
        fn(r, item * per_item, scores.data(), rescale.data());
  }
}

}  // namespace

void attention_accumulate(const Tensor& q, const Tensor& k, const Tensor& v, int64_t visible_offset,
                          float scale, AttentionState& st) {
  check_cpu_f32(q, "attention q");
  check_cpu_f32(k, "attention k");
  check_cpu_f32(v, "attention v");
  const int64_t m = q.dim(0), hq = q.dim(1), d = q.dim(2);
  const int64_t t = k.dim(0), hkv = k.dim(1);
  TESSERA_ASSERT(
      k.dim(2) == d && v.shape() == k.shape() && hq % hkv == 0 && st.acc.shape() == q.shape() &&
          st.mx.numel() == m * hq,
      "attention_accumulate: q " << shape_str(q.shape()) << " k " << shape_str(k.shape()));
  const int64_t group = hq / hkv;
  const int64_t per_item = heads_per_item(m, hq, hkv);
  const float* pq = q.data<float>();
  const float* pk = k.data<float>();
  const float* pv = v.data<float>();
  float* acc = st.acc.data<float>();
  float* pmx = st.mx.data<float>();
  float* psum = st.sum.data<float>();
  for_each_work_item(m, hq, per_item, t, [&](int64_t r, int64_t h, float* scores, float* rescale) {
    const int64_t n_keys = std::clamp<int64_t>(r + visible_offset + 1, 0, t);
    if (n_keys == 0) return;
    const int64_t kvh = h / group, s = r * hq + h;
    auto key_at = [&](int64_t j) {
      const int64_t at = (j * hkv + kvh) * d;
      return std::pair<const float*, const float*>(pk + at, pv + at);
    };
    accumulate_heads<float>(pq + s * d, per_item, n_keys, d, scale, 1.0f, key_at, scores, rescale,
                            pmx + s, psum + s, acc + s * d);
  });
}

namespace {

// The pools' elements are T (float, uint16_t holding float16, or uint8_t holding e4m3).
template <typename T>
void paged_attention_rows(const float* pq, const T* pk, const T* pv, int64_t m, int64_t hq,
                          int64_t hkv, int64_t d, int64_t bs,
                          const std::vector<PagedSequence>& seqs, const std::vector<int32_t>& owner,
                          const std::vector<std::vector<int64_t>>& key_offsets, int64_t most_keys,
                          float scale, KvScale kv_scale, AttentionState& st) {
  const int64_t group = hq / hkv;
  const int64_t per_item = heads_per_item(m, hq, hkv);
  float* acc = st.acc.data<float>();
  float* pmx = st.mx.data<float>();
  float* psum = st.sum.data<float>();
  for_each_work_item(
      m, hq, per_item, most_keys, [&](int64_t r, int64_t h, float* scores, float* rescale) {
        if (owner[size_t(r)] < 0) return;
        const PagedSequence& sq = seqs[size_t(owner[size_t(r)])];
        const int64_t n_keys = std::clamp<int64_t>(r - sq.row + sq.visible_offset + 1, 0, sq.keys);
        if (n_keys == 0) return;
        const int64_t* offsets = key_offsets[size_t(owner[size_t(r)])].data();
        const int64_t kvh = h / group, s = r * hq + h;
        auto key_at = [&](int64_t j) {
          const int64_t at = offsets[j] + kvh * bs * d;
          return std::pair<const T*, const T*>(pk + at, pv + at);
        };
        accumulate_heads<T>(pq + s * d, per_item, n_keys, d, scale * kv_scale.key, kv_scale.value,
                            key_at, scores, rescale, pmx + s, psum + s, acc + s * d);
      });
}

}  // namespace

void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool,
                                const std::vector<PagedSequence>& seqs, float scale,
                                KvScale kv_scale, AttentionState& st) {
  check_cpu_f32(q, "attention q");
  TESSERA_ASSERT(
      k_pool.defined() && v_pool.defined() && k_pool.device().is_cpu() &&
          v_pool.device().is_cpu() && k_pool.dtype() == v_pool.dtype() &&
          (k_pool.dtype() == DType::kF32 || k_pool.dtype() == DType::kF16 ||
           k_pool.dtype() == DType::kE4M3),
      "paged attention: the key and value pools must be f32, f16 or e4m3 tensors on the CPU");
  const int64_t m = q.dim(0), hq = q.dim(1), d = q.dim(2);
  const int64_t num_blocks = k_pool.dim(0), hkv = k_pool.dim(1), bs = k_pool.dim(2);
  TESSERA_ASSERT(
      k_pool.ndim() == 4 && k_pool.dim(3) == d && v_pool.shape() == k_pool.shape() &&
          hq % hkv == 0 && st.acc.shape() == q.shape() && st.mx.numel() == m * hq,
      "paged attention: q " << shape_str(q.shape()) << " pool " << shape_str(k_pool.shape()));
  // Which sequence each query row belongs to (-1: none), and the longest key list.
  std::vector<int32_t> owner(size_t(m), -1);
  int64_t most_keys = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const PagedSequence& s = seqs[i];
    TESSERA_ASSERT(s.row >= 0 && s.row + s.rows <= m, "paged attention: rows out of range");
    for (int64_t b = 0; b < (s.keys + bs - 1) / bs; ++b)
      TESSERA_ASSERT(s.blocks[b] >= 0 && s.blocks[b] < num_blocks,
                     "paged attention: block " << s.blocks[b] << " of a pool of " << num_blocks);
    for (int64_t r = s.row; r < s.row + s.rows; ++r) owner[size_t(r)] = int32_t(i);
    most_keys = std::max(most_keys, s.keys);
  }
  // Where each sequence's key j starts in the pools (KV head 0), found once per sequence instead
  // of a division per key and head.
  std::vector<std::vector<int64_t>> key_offsets(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    const PagedSequence& s = seqs[i];
    std::vector<int64_t>& at = key_offsets[i];
    at.resize(size_t(s.keys));
    for (int64_t j0 = 0, b = 0; j0 < s.keys; j0 += bs, ++b) {
      const int64_t first = int64_t(s.blocks[b]) * hkv * bs * d;
      for (int64_t slot = 0; slot < bs && j0 + slot < s.keys; ++slot)
        at[size_t(j0 + slot)] = first + slot * d;
    }
  }
  const auto rows = [&](auto element) {
    using T = decltype(element);
    paged_attention_rows(q.data<float>(), static_cast<const T*>(k_pool.raw()),
                         static_cast<const T*>(v_pool.raw()), m, hq, hkv, d, bs, seqs, owner,
                         key_offsets, most_keys, scale, kv_scale, st);
  };
  if (k_pool.dtype() == DType::kF16)
    rows(uint16_t{});
  else if (k_pool.dtype() == DType::kE4M3)
    rows(uint8_t{});
  else
    rows(float{});
}

void attention_merge(AttentionState& st, const AttentionState& other) {
  const int64_t n = st.mx.numel(), d = st.acc.dim(2);
  TESSERA_ASSERT(other.mx.numel() == n && other.acc.shape() == st.acc.shape(),
                 "attention_merge shapes");
  float* acc = st.acc.data<float>();
  float* mx = st.mx.data<float>();
  float* sum = st.sum.data<float>();
  const float* oacc = other.acc.data<float>();
  const float* omx = other.mx.data<float>();
  const float* osum = other.sum.data<float>();
  for (int64_t s = 0; s < n; ++s) {
    if (omx[s] == -INFINITY) continue;  // the other saw no key
    const float m = std::max(mx[s], omx[s]);
    const float a = std::exp(mx[s] - m), b = std::exp(omx[s] - m);
    for (int64_t i = 0; i < d; ++i) acc[s * d + i] = acc[s * d + i] * a + oacc[s * d + i] * b;
    sum[s] = sum[s] * a + osum[s] * b;
    mx[s] = m;
  }
}

void attention_finish(const AttentionState& st, Tensor& out) {
  check_cpu_f32(out, "attention output");
  const int64_t n = st.mx.numel(), d = st.acc.dim(2);
  TESSERA_ASSERT(out.numel() == n * d, "attention_finish shapes");
  const float* acc = st.acc.data<float>();
  const float* sum = st.sum.data<float>();
  float* o = out.data<float>();
  for (int64_t s = 0; s < n; ++s) {
    const float inv = sum[s] > 0 ? 1.0f / sum[s] : 0.0f;
    for (int64_t i = 0; i < d; ++i) o[s * d + i] = acc[s * d + i] * inv;
  }
}

void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v,
              const Tensor& slot_ids, KvScale kv_scale) {
  check_cpu_f32(k, "keys to store");
  check_cpu_f32(v, "values to store");
  TESSERA_ASSERT(slot_ids.dtype() == DType::kI64 && slot_ids.numel() == k.dim(0),
                 "store_kv: " << slot_ids.numel() << " slots for " << k.dim(0) << " rows");
  const int64_t* slots = slot_ids.data<int64_t>();
  const int64_t heads = k_pool.dim(1), bs = k_pool.dim(2), hd = k_pool.dim(3);
  const size_t elem = dtype_size(k_pool.dtype());
  char* kd = static_cast<char*>(k_pool.raw());
  char* vd = static_cast<char*>(v_pool.raw());
  const bool scaled = k_pool.dtype() == DType::kE4M3;
  std::vector<float> row(size_t(scaled ? hd : 0));
  // One head's row of n values from src into dst, divided by `by` where the pool is scaled.
  const auto put = [&](DType t, const float* src, char* dst, float by) {
    if (scaled) {
      for (int64_t i = 0; i < hd; ++i) row[size_t(i)] = src[i] / by;
      src = row.data();
    }
    convert_from_f32(t, src, dst, size_t(hd));
  };
  for (int64_t r = 0; r < slot_ids.numel(); ++r) {
    if (slots[r] < 0) continue;
    const int64_t first = slots[r] / bs * heads * bs, slot = slots[r] % bs;
    for (int64_t h = 0; h < heads; ++h) {
      const size_t at = size_t((first + h * bs + slot) * hd) * elem;
      const int64_t from = r * heads * hd + h * hd;
      put(k_pool.dtype(), k.data<float>() + from, kd + at, kv_scale.key);
      put(v_pool.dtype(), v.data<float>() + from, vd + at, kv_scale.value);
    }
  }
}

void round_through(Tensor& x, DType type, float scale) {
  check_cpu_f32(x, "values to round");
  if (type == DType::kF32) return;
  float* p = x.data<float>();
  if (type == DType::kE4M3) {
    for (int64_t i = 0; i < x.numel(); ++i)
      p[i] = fp8_e4m3_to_float(float_to_fp8_e4m3(p[i] / scale)) * scale;
    return;
  }
  std::vector<uint16_t> kept(size_t(x.numel()));
  convert_from_f32(type, p, kept.data(), kept.size());
  convert_to_f32(type, kept.data(), p, kept.size());
}

void convert(const Tensor& src, Tensor& dst) {
  std::vector<float> f(static_cast<size_t>(src.numel()));
  convert_to_f32(src.dtype(), src.raw(), f.data(), f.size());
  convert_from_f32(dst.dtype(), f.data(), dst.raw(), f.size());
}

void fill_uniform(Tensor& out, int64_t full_cols, int64_t row0, int64_t col0, uint64_t seed,
                  float offset, float scale) {
  if (scale == 0.0f) {  // offset + 0 * x is offset, -inf included: no numbers to draw (ops::fill)
    const std::vector<float> v(static_cast<size_t>(out.numel()), offset);
    convert_from_f32(out.dtype(), v.data(), out.raw(), v.size());
    return;
  }
  const int64_t cols = out.ndim() == 1 ? out.dim(0) : out.dim(-1);
  const int64_t rows = out.numel() / std::max<int64_t>(1, cols);
  std::vector<float> v(static_cast<size_t>(out.numel()));
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const volatile float x =
          2.0f * uniform_bits(seed, uint64_t((row0 + r) * full_cols + col0 + c)) - 1.0f;
      const volatile float product = scale * x;  // (two roundings, as on the GPU: no FMA)
      v[size_t(r * cols + c)] = offset + product;
    }
  convert_from_f32(out.dtype(), v.data(), out.raw(), v.size());
}

void repetition_penalty(Tensor& logits, const Tensor& ids, const Tensor& offsets, float penalty) {
  check_cpu_f32(logits, "logits");
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  TESSERA_ASSERT(logits.ndim() == 2 && ids.dtype() == DType::kI32 &&
                     offsets.dtype() == DType::kI32 && offsets.numel() == rows + 1,
                 "repetition_penalty: logits " << shape_str(logits.shape()) << ", offsets "
                                               << shape_str(offsets.shape()));
  const int32_t* id = ids.data<int32_t>();
  const int32_t* at = offsets.data<int32_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int32_t i = at[r]; i < at[r + 1]; ++i) {
      TESSERA_ASSERT(id[i] >= 0 && id[i] < vocab, "penalised id " << id[i] << " of " << vocab);
      float& l = logits.data<float>()[r * vocab + id[i]];
      l = l > 0 ? l / penalty : l * penalty;
    }
}

void top_k(const Tensor& logits, int k, Tensor& values, Tensor& ids) {
  check_cpu_f32(logits, "logits");
  check_cpu_f32(values, "top-k values");
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  TESSERA_ASSERT(logits.ndim() == 2 && k >= 1 && k <= kMaxTopK && k <= vocab &&
                     values.numel() == rows * k && ids.numel() == rows * k &&
                     ids.dtype() == DType::kI32,
                 "top_k " << k << " of logits " << shape_str(logits.shape()));
  std::vector<std::pair<float, int32_t>> c(static_cast<size_t>(vocab));
  const auto better = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  for (int64_t r = 0; r < rows; ++r) {
    const float* l = logits.data<float>() + r * vocab;
    for (int64_t v = 0; v < vocab; ++v)
      c[size_t(v)] = {std::isnan(l[v]) ? -INFINITY : l[v], int32_t(v)};
    std::partial_sort(c.begin(), c.begin() + k, c.end(), better);
    for (int j = 0; j < k; ++j) {
      values.data<float>()[r * k + j] = c[size_t(j)].first;
      ids.data<int32_t>()[r * k + j] = c[size_t(j)].second;
    }
  }
}

}  // namespace tessera::ops::cpu
