// The GPU's paged attention (see kernels/cuda/paged_attention_launcher.h for what it computes and
// how the work is cut). float32 arithmetic throughout; queries f32/bf16/f16, pools f32/f16/bf16
// or e4m3. Compiled by nvcc (paged_attention.cu) and, against the emulator, into the tests.
#pragma once

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/paged_attention_launcher.h"
#if defined(__CUDACC__)
#include <mma.h>
#else
#include "kernels/cuda/simt_wmma.h"
#endif

namespace tessera::cuda::TESSERA_KERNELS {
namespace paged_detail {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kVectorsPerWarp = kMaxQueryVectors / kWarps;
constexpr int kMaxDimsPerLane = 8;  // head_dim <= 256

// Shared memory: the tile's query vectors (kMaxQueryVectors, d), a step of keys (kKeysPerStep,
// d + 1: the padding puts each lane's key row in its own bank), of values (kKeysPerStep, d), and
// each warp's softmax weights of the step (kWarps, kKeysPerStep).
__host__ __device__ inline size_t shared_bytes(int64_t d) {
  return size_t(kMaxQueryVectors * d + kKeysPerStep * (d + 1) + kKeysPerStep * d +
                kWarps * kKeysPerStep) *
         sizeof(float);
}

// What block (tile, KV head, split) works on: the tile's rows of one sequence, and the keys
// [k_begin, k_end) of this split that the tile's last row sees (the others see fewer).
struct BlockWork {
  int64_t row0 = 0, rows = 0, n_vec = 0;  // the tile's rows, and its query vectors
  int64_t seq_row = 0, offset = 0;        // the sequence's first row, and its visible offset
  const int32_t* table = nullptr;         // the sequence's block table
  int64_t k_begin = 0, k_end = 0;
};

__device__ __forceinline__ BlockWork block_work(const PagedAttentionArgs& a, int64_t group,
                                                int64_t split) {
  const int32_t* tile = a.tiles + int64_t(blockIdx.x) * PagedAttentionPlan::kTileFields;
  const int32_t* seq = a.sequences + int64_t(tile[0]) * PagedAttentionPlan::kSeqFields;
  BlockWork w;
  w.row0 = tile[1], w.rows = tile[2], w.n_vec = w.rows * group;
  w.seq_row = seq[0], w.offset = seq[2];
  w.table = a.block_tables + seq[3];
  const int64_t keys = seq[1], seen_by_last = (w.row0 + w.rows - 1 - w.seq_row) + w.offset + 1;
  w.k_begin = split * a.keys_per_split;
  w.k_end = min(min(keys, seen_by_last), w.k_begin + a.keys_per_split);
  return w;
}

// The step of kKeysPerStep keys from k0 of KV head g, read by the whole block: store(j, i, k, v)
// for key k0 + j, dim i (zeros past the split's keys).
template <class TKV, class Store>
__device__ __forceinline__ void load_kv_step(const PagedAttentionArgs& a, const BlockWork& w,
                                             int64_t g, int64_t k0, Store&& store) {
  const int64_t d = a.head_dim;
  const TKV* k_pool = static_cast<const TKV*>(a.k_pool);
  const TKV* v_pool = static_cast<const TKV*>(a.v_pool);
  for (int64_t e = threadIdx.x; e < kKeysPerStep * d; e += kThreads) {
    const int64_t j = e / d, i = e % d, key = k0 + j;
    float kv = 0.0f, vv = 0.0f;
    if (key < w.k_end) {
      const int64_t at = ((int64_t(w.table[key / a.block_size]) * a.n_kv_heads + g) * a.block_size +
                          key % a.block_size) *
                             d +
                         i;
      kv = load(k_pool, at);
      vv = load(v_pool, at) * a.v_scale;
    }
    store(j, i, kv, vv);
  }
}

// Split `split`'s partial state of row r, head h in scratch: d accumulators, the max, the sum.
__device__ __forceinline__ float* partial_state(const PagedAttentionArgs& a, int64_t split,
                                                int64_t r, int64_t h) {
  return a.scratch + ((split * a.m + r) * a.n_heads + h) * (a.head_dim + 2);
}

// Block (tile, KV head g, split): the partial state of the tile's query vectors over the split's
// keys, written to scratch[(split, row, head)] as d accumulators, the max and the sum.
// Query vector v of the tile is row row0 + v / group, head g * group + v % group. A warp takes
// vectors warp, warp + kWarps, ...; in a step lane l scores key k0 + l, and lane l accumulates
// output dims l, l + 32, ...
template <class TQ, class TKV>
__global__ void __launch_bounds__(kThreads) partial_kernel(PagedAttentionArgs a) {
  const int64_t d = a.head_dim, pitch = d + 1, hq = a.n_heads, hkv = a.n_kv_heads;
  const int64_t group = hq / hkv, g = blockIdx.y, split = blockIdx.z;
  const BlockWork w = block_work(a, group, split);
  const int64_t row0 = w.row0, seq_row = w.seq_row, offset = w.offset, n_vec = w.n_vec;
  const int64_t k_begin = w.k_begin, k_end = w.k_end;
  const TQ* q = static_cast<const TQ*>(a.q);

  TESSERA_DYNAMIC_SHARED(float, smem);
  float* sq = smem;
  float* sk = sq + kMaxQueryVectors * d;
  float* sv = sk + kKeysPerStep * pitch;
  float* weights = sv + kKeysPerStep * d;  // (kWarps, kKeysPerStep)
  for (int64_t e = threadIdx.x; e < n_vec * d; e += kThreads) {
    const int64_t v = e / d, i = e % d;
    const int64_t r = row0 + v / group, h = g * group + v % group;
    sq[e] = load(q, (r * hq + h) * d + i);
  }
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  // Output dims of this lane: lane + 32 e for e < dims (any head_dim up to 256).
  const int dims = lane < d ? int((d - lane + 31) / 32) : 0;
  float mx[kVectorsPerWarp], sum[kVectorsPerWarp], acc[kVectorsPerWarp][kMaxDimsPerLane];
  for (int c = 0; c < kVectorsPerWarp; ++c) {
    mx[c] = -INFINITY;
    sum[c] = 0.0f;
    for (int e = 0; e < kMaxDimsPerLane; ++e) acc[c][e] = 0.0f;
  }
  __syncthreads();
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kKeysPerStep) {
    load_kv_step<TKV>(a, w, g, k0, [&](int64_t j, int64_t i, float kv, float vv) {
      sk[j * pitch + i] = kv;
      sv[j * d + i] = vv;
    });
    __syncthreads();
    for (int c = 0; c < kVectorsPerWarp; ++c) {
      const int64_t v = warp + int64_t(c) * kWarps;
      if (v >= n_vec) break;  // the same for the whole warp
      const int64_t row = row0 + v / group;
      const int64_t limit = min(k_end, (row - seq_row) + offset + 1);  // keys below it are seen
      const int64_t key = k0 + lane;
      float score = -INFINITY;
      if (key < limit) {
        const float* qv = sq + v * d;
        const float* kr = sk + int64_t(lane) * pitch;
        float dot = 0.0f;
        for (int64_t i = 0; i < d; ++i) dot += qv[i] * kr[i];
        score = dot * a.scale;
      }
      const float new_mx = fmaxf(mx[c], warp_max(score));
      if (new_mx == -INFINITY) continue;  // no key of this step is seen (the same for the warp)
      const float rescale = expf(mx[c] - new_mx);  // 0 when nothing was seen before
      const float p = key < limit ? expf(score - new_mx) : 0.0f;
      sum[c] = sum[c] * rescale + warp_sum(p);
      mx[c] = new_mx;
      TESSERA_UNROLL
      for (int e = 0; e < kMaxDimsPerLane; ++e)
        if (e < dims) acc[c][e] *= rescale;
      // The step's weights through shared memory: one warp barrier instead of 32 shuffles.
      float* wp = weights + warp * kKeysPerStep;
      wp[lane] = p;
      __syncwarp();
      for (int jj = 0; jj < kKeysPerStep; ++jj) {
        const float pj = wp[jj];
        const float* vr = sv + int64_t(jj) * d + lane;
        TESSERA_UNROLL
        for (int e = 0; e < kMaxDimsPerLane; ++e)
          if (e < dims) acc[c][e] += pj * vr[32 * e];
      }
      __syncwarp();  // every lane has read wp before the next vector writes it
    }
    __syncthreads();  // the step's keys are read by every warp before the next are loaded
  }
  for (int c = 0; c < kVectorsPerWarp; ++c) {
    const int64_t v = warp + int64_t(c) * kWarps;
    if (v >= n_vec) break;
    const int64_t r = row0 + v / group, h = g * group + v % group;
    float* out = partial_state(a, split, r, h);
    TESSERA_UNROLL
    for (int e = 0; e < kMaxDimsPerLane; ++e)
      if (e < dims) out[lane + 32 * e] = acc[c][e];
    if (lane == 0) {
      out[d] = mx[c];
      out[d + 1] = sum[c];
    }
  }
}

// The same partial state with tensor cores, for bf16 queries and head_dim a multiple of 16
// (prefill chunks), on tiles of up to kTcQueryVectors (64) query vectors: warp w owns vectors
// [16 w, 16 w + 16), the M of its products. Per step of 32 keys (read once for the block), each
// warp computes S = Q K^T and O += P V as 16x16x16 bf16 products with float32 accumulation
// (nvcuda::wmma), with the online softmax of its 16 rows between them in float32. Missing vectors
// are zero rows that see no key. Keys, values and the softmax weights P are rounded to bf16 for
// the products, so this agrees with the float32 kernel to bf16 precision, not bitwise. O, S and the
// row statistics live in shared memory between the products.
constexpr int kTcWarpRows = 16;
static_assert(kTcQueryVectors == kWarps * kTcWarpRows && kKeysPerStep == 32,
              "each warp's 16 rows against steps of 32 keys");

// Shared memory, every array at a multiple of 128 bytes (d a multiple of 16): O (64, d) f32,
// S (64, 32) f32, row statistics (m, l, alpha: 3 x 64 f32), then bf16 Q (64, d), K (32, d),
// V (32, d) and P (64, 32).
__host__ __device__ inline size_t tc_shared_bytes(int64_t d) {
  return size_t(kTcQueryVectors * d + kTcQueryVectors * kKeysPerStep + 3 * kTcQueryVectors) *
             sizeof(float) +
         size_t(kTcQueryVectors * d + 2 * kKeysPerStep * d + kTcQueryVectors * kKeysPerStep) * 2;
}

template <class TKV>
__global__ void __launch_bounds__(kThreads) tc_partial_kernel(PagedAttentionArgs a) {
  namespace wmma = nvcuda::wmma;
  using bf16 = __nv_bfloat16;
  const int64_t d = a.head_dim, hq = a.n_heads, hkv = a.n_kv_heads;
  const int64_t group = hq / hkv, g = blockIdx.y, split = blockIdx.z;
  const BlockWork w = block_work(a, group, split);
  const int64_t row0 = w.row0, seq_row = w.seq_row, offset = w.offset, n_vec = w.n_vec;
  const int64_t k_begin = w.k_begin, k_end = w.k_end;
  const bf16* q = static_cast<const bf16*>(a.q);
  constexpr int kV = kTcQueryVectors, kS = kKeysPerStep;

  TESSERA_DYNAMIC_SHARED(float, smem);
  float* so = smem;                                // (64, d)
  float* ss = so + kV * d;                         // (64, 32)
  float* m_row = ss + kV * kS;                     // (64) running max
  float* l_row = m_row + kV;                       // (64) running sum
  float* alpha = l_row + kV;                       // (64) this step's rescale of O
  bf16* sq = reinterpret_cast<bf16*>(alpha + kV);  // (64, d)
  bf16* sk = sq + kV * d;                          // (32, d)
  bf16* sv = sk + kS * d;                          // (32, d)
  bf16* sp = sv + kS * d;                          // (64, 32)
  for (int64_t e = threadIdx.x; e < kV * d; e += kThreads) {
    const int64_t v = e / d, i = e % d;
    float x = 0.0f;
    if (v < n_vec) {
      const int64_t r = row0 + v / group, h = g * group + v % group;
      x = load(q, (r * hq + h) * d + i);
    }
    sq[e] = __float2bfloat16_rn(x);
    so[e] = 0.0f;
  }
  if (threadIdx.x < kV) {
    m_row[threadIdx.x] = -INFINITY;
    l_row[threadIdx.x] = 0.0f;
  }
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t v0 = int64_t(warp) * kTcWarpRows;  // this warp's first vector
  const bool warp_has_rows = v0 < n_vec;           // (the same for the whole warp)
  __syncthreads();
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kS) {
    load_kv_step<TKV>(a, w, g, k0, [&](int64_t j, int64_t i, float kv, float vv) {
      sk[j * d + i] = __float2bfloat16_rn(kv);
      sv[j * d + i] = __float2bfloat16_rn(vv);
    });
    __syncthreads();
    if (warp_has_rows) {
      // S (16, 32) of this warp's rows = Q K^T, two 16-key halves over d in chunks of 16.
      for (int half = 0; half < 2; ++half) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int64_t c = 0; c < d; c += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;  // K^T
          wmma::load_matrix_sync(fa, sq + v0 * d + c, unsigned(d));
          wmma::load_matrix_sync(fb, sk + int64_t(16 * half) * d + c, unsigned(d));
          wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(ss + v0 * kS + 16 * half, acc, kS, wmma::mem_row_major);
      }
      __syncwarp();
      // The online softmax of the warp's rows, lane = key of the step.
      for (int64_t v = v0; v < v0 + kTcWarpRows; ++v) {
        float p = 0.0f, rescale = 1.0f;
        if (v < n_vec) {
          const int64_t row = row0 + v / group, key = k0 + lane;
          const int64_t limit = min(k_end, (row - seq_row) + offset + 1);
          const float score = key < limit ? ss[v * kS + lane] * a.scale : -INFINITY;
          const float old_mx = m_row[v], old_sum = l_row[v];
          const float new_mx = fmaxf(old_mx, warp_max(score));
          if (new_mx != -INFINITY) {
            rescale = expf(old_mx - new_mx);
            p = key < limit ? expf(score - new_mx) : 0.0f;
            const float sum = old_sum * rescale + warp_sum(p);
            if (lane == 0) {
              m_row[v] = new_mx;
              l_row[v] = sum;
            }
          }
        }
        sp[v * kS + lane] = __float2bfloat16_rn(p);
        if (lane == 0) alpha[v] = rescale;
      }
      __syncwarp();
      for (int64_t e = lane; e < kTcWarpRows * d; e += 32) so[v0 * d + e] *= alpha[v0 + e / d];
      __syncwarp();
      // O (16, d) of the warp's rows += P V, in tiles of 16 dims, over the step in two halves.
      for (int64_t t = 0; t < d / 16; ++t) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::load_matrix_sync(acc, so + v0 * d + 16 * t, unsigned(d), wmma::mem_row_major);
        for (int c = 0; c < kS; c += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
          wmma::load_matrix_sync(fa, sp + v0 * kS + c, kS);
          wmma::load_matrix_sync(fb, sv + int64_t(c) * d + 16 * t, unsigned(d));
          wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(so + v0 * d + 16 * t, acc, unsigned(d), wmma::mem_row_major);
      }
    }
    __syncthreads();  // every warp is done with the step's keys before the next are loaded
  }
  for (int64_t e = threadIdx.x; e < n_vec * (d + 2); e += kThreads) {
    const int64_t v = e / (d + 2), i = e % (d + 2);
    const int64_t r = row0 + v / group, h = g * group + v % group;
    float* out = partial_state(a, split, r, h);
    out[i] = i < d ? so[v * d + i] : i == d ? m_row[v] : l_row[v];
  }
}

// Block (tile, KV head): the state of the tile's query vectors, merged with every split's
// partial state in split order (log-sum-exp rescaling, as ops::attention_merge).
__global__ void __launch_bounds__(kThreads) merge_kernel(PagedAttentionArgs a) {
  const int64_t d = a.head_dim, hq = a.n_heads, group = hq / a.n_kv_heads, g = blockIdx.y;
  const int32_t* tile = a.tiles + int64_t(blockIdx.x) * PagedAttentionPlan::kTileFields;
  const int64_t row0 = tile[1], n_vec = tile[2] * group;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int dims = lane < d ? int((d - lane + 31) / 32) : 0;
  for (int64_t v = warp; v < n_vec; v += kWarps) {
    const int64_t r = row0 + v / group, h = g * group + v % group, s = r * hq + h;
    float mx = a.mx[s], sum = a.sum[s], acc[kMaxDimsPerLane] = {};
    TESSERA_UNROLL
    for (int e = 0; e < kMaxDimsPerLane; ++e)
      if (e < dims) acc[e] = a.acc[s * d + lane + 32 * e];
    for (int64_t split = 0; split < a.splits; ++split) {
      const float* part = partial_state(a, split, r, h);
      const float pmx = part[d];
      if (pmx == -INFINITY) continue;  // the piece saw no key
      const float m = fmaxf(mx, pmx), x = expf(mx - m), y = expf(pmx - m);
      TESSERA_UNROLL
      for (int e = 0; e < kMaxDimsPerLane; ++e)
        if (e < dims) acc[e] = acc[e] * x + part[lane + 32 * e] * y;
      sum = sum * x + part[d + 1] * y;
      mx = m;
    }
    __syncwarp();  // every lane has read mx and sum before lane 0 writes them
    TESSERA_UNROLL
    for (int e = 0; e < kMaxDimsPerLane; ++e)
      if (e < dims) a.acc[s * d + lane + 32 * e] = acc[e];
    if (lane == 0) {
      a.mx[s] = mx;
      a.sum[s] = sum;
    }
  }
}

template <class TQ, class TKV>
std::string launch(const PagedAttentionArgs& a) {
  const dim3 grid(unsigned(a.n_tiles), unsigned(a.n_kv_heads), unsigned(a.splits));
  const bool tc = a.tile_vectors == kTcQueryVectors;  // the plan chose tensor cores
  if constexpr (std::is_same_v<TQ, __nv_bfloat16>) {
    if (tc) {
      const size_t smem = tc_shared_bytes(a.head_dim);
      if (smem > 48 * 1024) {
        const std::string e = allow_shared_memory(tc_partial_kernel<TKV>, smem);
        if (!e.empty()) return e;
      }
      TESSERA_LAUNCH(grid, kThreads, smem, a.stream, tc_partial_kernel<TKV>)(a);
    }
  }
  if (!tc) {
    const size_t smem = shared_bytes(a.head_dim);
    if (smem > 48 * 1024) {
      const std::string e = allow_shared_memory(partial_kernel<TQ, TKV>, smem);
      if (!e.empty()) return e;
    }
    TESSERA_LAUNCH(grid, kThreads, smem, a.stream, partial_kernel<TQ, TKV>)(a);
  }
  std::string e = launch_error();
  if (!e.empty()) return e;
  TESSERA_LAUNCH(dim3(unsigned(a.n_tiles), unsigned(a.n_kv_heads)), kThreads, 0, a.stream,
                 merge_kernel)
  (a);
  return launch_error();
}

}  // namespace paged_detail

std::string paged_attention(const PagedAttentionArgs& a) {
  if (a.n_tiles == 0) return {};
  if (a.head_dim < 1 || a.head_dim > 32 * paged_detail::kMaxDimsPerLane)
    return "paged attention on the GPU needs head_dim up to 256, got " + std::to_string(a.head_dim);
  if (a.q_type == Elem::kF16) return "paged attention on the GPU takes f32 or bf16 queries";
  if (a.tile_vectors != kMaxQueryVectors &&
      !(a.tile_vectors == kTcQueryVectors && tensor_core_attention(a.q_type, a.head_dim)))
    return "paged attention: tiles of " + std::to_string(a.tile_vectors) +
           " query vectors need bf16 queries and head_dim a multiple of 16";
  return with_kv_elem(a.kv_type, [&](auto kv_tag) {
    using TKV = decltype(kv_tag);
    return a.q_type == Elem::kF32 ? paged_detail::launch<float, TKV>(a)
                                  : paged_detail::launch<__nv_bfloat16, TKV>(a);
  });
}

}  // namespace tessera::cuda::TESSERA_KERNELS
