// A CPU emulator of the CUDA execution model, so that the kernels in kernels/cuda/*.cuh run
// (slowly, one OS thread) in tests on machines without a GPU: every GPU thread of a block is a
// fiber; __syncthreads and warp shuffles switch fibers; blocks run one after another.
//
// What it checks that a plain port to C++ would not: barriers reached by some threads of a block
// and not others (divergent __syncthreads: reported, not hung), shuffles reading a lane that is
// absent or exited, launch configurations the GPU refuses (more than 1024 threads, more dynamic
// shared memory than the kernel was allowed). Fibers are resumed in a seeded random order between
// barriers, so code that only works when threads run in index order fails here. Dynamic shared
// memory starts each block as NaNs (0xff bytes); static __shared__ arrays keep the last block's
// values, as they may on the GPU. What it cannot
// check: timing, coalescing, bank conflicts, races between threads that the order happens to hide.
//
// Included only through kernels/cuda/simt.h, and only when nvcc is not the compiler.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_functions.h>
#include <vector_types.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/cuda/simt_capture.h"

// cuda's host_defines.h gives these GNU attributes; here they mean nothing, and __shared__ data
// is one static object, which is right because the blocks of a launch run one at a time.
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace tessera::simt {

// The launch the running fiber belongs to: its indices and the block's dynamic shared memory.
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void* dynamic_shared_memory();

void sync_block();  // __syncthreads
void sync_warp();   // __syncwarp (full mask)
// The value lane `src` of this warp passed in the same collective call; every live lane of the
// warp must make the call, and mask must name exactly those lanes.
uint64_t exchange_in_warp(unsigned mask, uint64_t bits, int src);
unsigned lane_id();
// Bit i set when live lane i passed a true pred (the same rules as exchange_in_warp).
unsigned ballot_in_warp(unsigned mask, bool pred);

// Runs body as every thread of every block (grid x block). Returns "" or what went wrong (bad
// configuration, divergent barrier, bad shuffle), as cudaGetLastError would after a launch.
std::string run(dim3 grid, dim3 block, size_t dynamic_shared_bytes, size_t shared_limit,
                const std::function<void()>& body);
// A kernel's dynamic shared memory limit: 48 KiB unless raised (cudaFuncSetAttribute), at most
// the 227 KiB an H100 has per block.
void set_shared_limit(const void* kernel, size_t bytes);
size_t shared_limit(const void* kernel);
// The seed of the order fibers are resumed in (tests change it to shake the order).
void set_schedule_seed(uint64_t seed);
// The last launch's error (and clears it), like cudaGetLastError.
std::string take_launch_error();

// TESSERA_LAUNCH(grid, block, smem, stream, kernel)(args...) in emulation.
template <class Kernel>
struct Launch {
  dim3 grid, block;
  size_t smem;
  Kernel* kernel;
  template <class... Args>
  void operator()(Args&&... args) const {
    if (capturing()) {  // a graph's node: the arguments as they are now, run at each replay
      record([l = *this, saved = std::make_tuple(std::decay_t<Args>(args)...)] {
        return std::apply([&](const auto&... a) { return l.run_now(a...); }, saved);
      });
      return;
    }
    run_now(args...);
  }
  template <class... Args>
  std::string run_now(const Args&... args) const {
    return run(grid, block, smem, shared_limit(reinterpret_cast<const void*>(kernel)),
               [&] { kernel(args...); });
  }
};
template <class Kernel>
Launch<Kernel> launch(dim3 grid, dim3 block, size_t smem, Kernel* kernel) {
  return {grid, block, smem, kernel};
}

template <class T>
T shuffle(unsigned mask, T v, int src) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = exchange_in_warp(mask, bits, src);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

}  // namespace tessera::simt

#define threadIdx (::tessera::simt::thread_idx())
#define blockIdx (::tessera::simt::block_idx())
#define blockDim (::tessera::simt::block_dim())
#define gridDim (::tessera::simt::grid_dim())

inline void __syncthreads() {
  ::tessera::simt::sync_block();
}
inline void __syncwarp(unsigned = 0xffffffffu) {
  ::tessera::simt::sync_warp();
}

template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  const int lane = int(::tessera::simt::lane_id());
  return ::tessera::simt::shuffle(mask, v, lane / width * width + src_lane % width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = int(::tessera::simt::lane_id());
  const int src = lane ^ lane_mask;
  return ::tessera::simt::shuffle(mask, v, src / width == lane / width ? src : lane);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = int(::tessera::simt::lane_id());
  return ::tessera::simt::shuffle(mask, v,
                                  lane % width + int(delta) < width ? lane + int(delta) : lane);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = int(::tessera::simt::lane_id());
  return ::tessera::simt::shuffle(mask, v, lane % width >= int(delta) ? lane - int(delta) : lane);
}

inline unsigned __ballot_sync(unsigned mask, int pred) {
  return ::tessera::simt::ballot_in_warp(mask, pred != 0);
}
inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}

// One OS thread runs every fiber, so the atomics are plain read-modify-writes.
template <class T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <class T>
T atomicMax(T* p, T v) {
  const T old = *p;
  if (v > old) *p = v;
  return old;
}
template <class T>
T atomicExch(T* p, T v) {
  const T old = *p;
  *p = v;
  return old;
}

// The integer min and max CUDA's device code has.
template <class T>
T min(T a, T b) {
  return b < a ? b : a;
}
template <class T>
T max(T a, T b) {
  return a < b ? b : a;
}

inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}
inline float __expf(float x) {
  return std::exp(x);
}
inline float __logf(float x) {
  return std::log(x);
}
// Rounded separately, never fused into an FMA (volatile stops the host compiler contracting).
inline float __fadd_rn(float a, float b) {
  const volatile float s = a + b;
  return s;
}
inline float __fmul_rn(float a, float b) {
  const volatile float p = a * b;
  return p;
}
inline float __fdividef(float a, float b) {
  return a / b;
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}
template <class T>
T __ldg(const T* p) {
  return *p;
}
