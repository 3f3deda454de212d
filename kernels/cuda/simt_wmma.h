// The warp matrix operations of CUDA's <mma.h> (nvcuda::wmma, 16x16x16 tiles: bf16 or f16
// operands, float32 accumulators) on the CUDA emulator (kernels/cuda/simt_emulator.h).
//
// On a GPU a fragment's elements are spread over the warp's lanes in an unspecified order; a
// kernel may only touch them all alike (x[i] for every i < num_elements). Here every lane holds
// the whole tile, which is one valid such order: a kernel correct here does not depend on the
// order, and one that does (a lane reading "its" row of x) computes wrong values here. Each
// operation is warp-collective: the emulator checks that the whole warp calls it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = rows * cols;
  T x[num_elements];  // (rows, cols), row-major
};

namespace detail {
inline float to_float(float v) {
  return v;
}
inline float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
inline float to_float(__half v) {
  return __half2float(v);
}
inline void warp_collective() {
  ::tessera::simt::sync_warp();
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const T& v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

// matrix_a / matrix_b: the layout is the fragment's.
template <class Use, int M, int N, int K, class T, class Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same_v<Layout, void>, "an operand fragment names its layout");
  detail::warp_collective();
  using F = fragment<Use, M, N, K, T, Layout>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] =
          std::is_same_v<Layout, row_major> ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r];
  detail::warp_collective();
}

// The accumulator: the layout is given.
template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm,
                      layout_t layout) {
  detail::warp_collective();
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      f.x[r * N + c] = layout == mem_row_major ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r];
  detail::warp_collective();
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                       layout_t layout) {
  detail::warp_collective();
  if (::tessera::simt::lane_id() == 0)  // (every lane holds the tile: one writes it)
    for (int r = 0; r < M; ++r)
      for (int c = 0; c < N; ++c)
        (layout == mem_row_major ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r]) =
            f.x[r * N + c];
  detail::warp_collective();
}

// d = a b + c: products of the operands in float32, summed in k order (a GPU's order is its own).
template <int M, int N, int K, class T, class LA, class LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  detail::warp_collective();
  float out[M * N];
  for (int r = 0; r < M; ++r)
    for (int col = 0; col < N; ++col) {
      float s = c.x[r * N + col];
      for (int k = 0; k < K; ++k)
        s += detail::to_float(a.x[r * K + k]) * detail::to_float(b.x[k * N + col]);
      out[r * N + col] = s;
    }
  for (int i = 0; i < M * N; ++i) d.x[i] = out[i];
  detail::warp_collective();
}

}  // namespace nvcuda::wmma
