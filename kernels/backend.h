// A device's implementation of the ops of kernels/ops.h, its synchronisation and its graphs (as
// ggml's backends are): one Backend per device type, registered at run time as the allocators
// are (kernels/device.h). The CPU's is always there (kernels/cpu/cpu_backend.cpp); the CUDA
// backend (kernels/cuda/cuda_backend.cpp) registers itself with the CUDA allocator when a GPU, or
// an emulated one, is first set up; the emulator runs the CUDA backend's own kernel sources.
// kernels/ops.cpp hands every op to the backend of its tensors' device, so nothing above
// kernels/ names a device's code or asks which backend was built.
//
// Each op's meaning is in kernels/ops.h; the tensors of one call are on one device.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kernels/ops.h"

namespace tessera {

// Work recorded on one device, replayed at the cost of one launch (a CUDA graph). Nothing recorded
// may touch host memory: a step's inputs are copied into the graph's buffers before replay() and
// its outputs out after; the buffers made while recording must be kept alive (KeepAllocations in
// kernels/tensor.h) as long as the graph is.
class DeviceGraph {
 public:
  virtual ~DeviceGraph() = default;
  // Queues the recorded work on the device (in order with what is already queued there).
  virtual void replay() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Whether linear() and embedding() take weights of type `weight` as they are, with activations
  // of type `activations` (else the model keeps them converted, ops::resident_weight_dtype).
  virtual bool computes_on(DType weight, DType activations) const = 0;
  virtual void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) = 0;
  // How linear() groups the rows of x for weights of type `weight` (ops::linear_row_tiling; by
  // default rows cost alike).
  virtual ops::RowTiling linear_row_tiling(DType weight) const {
    (void)weight;
    return {};
  }
  // (by default, each part's linear in turn)
  virtual void linear_group(const Tensor& x, const std::vector<ops::LinearPart>& parts) {
    for (const ops::LinearPart& p : parts) linear(x, *p.w, p.bias, *p.y);
  }
  virtual void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) = 0;
  virtual void add_inplace(Tensor& a, const Tensor& b) = 0;
  virtual void add_rms_norm(Tensor& x, const Tensor& delta, const Tensor& weight, float eps,
                            Tensor& y) = 0;
  virtual void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) = 0;
  virtual void gather_columns(const Tensor& x, const Tensor& order, Tensor& y) = 0;
  virtual void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  virtual void rope_inplace(Tensor& x, const Tensor& positions, const Tensor& inv_freq) = 0;
  virtual void attention_accumulate(const Tensor& q, const Tensor& k, const Tensor& v,
                                    int64_t visible_offset, float scale,
                                    ops::AttentionState& state) = 0;
  // The device's plan for paged attention over `seqs` (ops::PagedAttentionWork::device_plan),
  // or null where the backend reads the work's sequences as they are (the CPU).
  virtual std::shared_ptr<void> prepare_paged_attention(const std::vector<ops::PagedSequence>& seqs,
                                                        int64_t m, int64_t n_heads,
                                                        const Tensor& k_pool,
                                                        int64_t keys_capacity, DType q_dtype) = 0;
  virtual void refill_paged_attention(ops::PagedAttentionWork& work) = 0;  // (its new sequences)
  virtual void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool,
                                          const Tensor& v_pool, const ops::PagedAttentionWork& work,
                                          float scale, ops::KvScale kv_scale,
                                          ops::AttentionState& state) = 0;
  virtual void attention_merge(ops::AttentionState& state, const ops::AttentionState& other) = 0;
  virtual void attention_finish(const ops::AttentionState& state, Tensor& out) = 0;
  virtual void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v,
                        const Tensor& slots, ops::KvScale kv_scale) = 0;
  virtual void round_through(Tensor& x, DType type, float scale) = 0;
  virtual void convert(const Tensor& src, Tensor& dst) = 0;  // src and dst on this device
  virtual void fill_uniform(Tensor& out, int64_t full_cols, int64_t row0, int64_t col0,
                            uint64_t seed, float offset, float scale) = 0;
  virtual void repetition_penalty(Tensor& logits, const Tensor& ids, const Tensor& offsets,
                                  float penalty) = 0;
  virtual void top_k(const Tensor& logits, int k, Tensor& values, Tensor& ids) = 0;

  // Waits for the work queued on device `index`; throws what it raised.
  virtual void synchronize(int index) = 0;
  // Records the work `record` queues on device `index` as a graph, instead of running it; null
  // where the device has no graphs (the CPU). Throws, having given up the recording, when
  // `record` throws or the device cannot record what it queued.
  virtual std::unique_ptr<DeviceGraph> capture(int index, const std::function<void()>& record) = 0;
};

// The backend of a device type: the CPU's, or one registered; throws naming the type when none is.
Backend& backend_for(DeviceType type);
void register_backend(DeviceType type, Backend* backend);

// Device-wide calls that are not ops on tensors, for runtime/: waits for what is queued on `d`;
// records a graph on `d` (null where it has none; see Backend::capture).
void synchronize(Device d);
std::unique_ptr<DeviceGraph> capture_graph(Device d, const std::function<void()>& record);

}  // namespace tessera
