// The CUDA backend: kernels/ops.h on GPU tensors (cuda_ops.cpp: the kernels and cuBLAS, or on an
// emulated GPU the same kernel sources on the CUDA emulator), the GPU's compute stream for
// synchronisation, and CUDA graphs of that stream (stream_graph.h; the emulator records and
// replays launches). Registered with the CUDA allocator (cuda_memory.cpp).
#include "kernels/backend.h"
#include "kernels/cuda/cuda_memory.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/stream_graph.h"

namespace tessera::cuda {
namespace {

class Graph final : public DeviceGraph {
 public:
  explicit Graph(std::unique_ptr<StreamGraph> g) : graph_(std::move(g)) {}
  void replay() override { graph_->replay(); }

 private:
  std::unique_ptr<StreamGraph> graph_;
};

class CudaBackend final : public Backend {
 public:
  bool computes_on(DType weight, DType activations) const override {
    // f32 or bf16 weights, like the activations (cuBLAS); or blocks of a quantized format the
    // quantized kernels read (kernels/cuda/quant_linear_launchers.h)
    return weight == activations || cuda::gpu_quant_format(weight).has_value();
  }
  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override {
    cuda::linear(x, w, bias, y);
  }
  ops::RowTiling linear_row_tiling(DType weight) const override {
    // The quantized kernels read up to kQuantLinearMaxRows rows of x with the weights decoded in
    // registers, each row's sums alike whatever the batch; past them (and on float weights)
    // cuBLAS, whose algorithm follows the shape.
    if (!cuda::gpu_quant_format(weight).has_value()) return {};
    return {.tile = 1, .max_rows = cuda::kQuantLinearMaxRows};
  }
  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) override {
    cuda::rms_norm(x, weight, eps, y);
  }
  void add_inplace(Tensor& a, const Tensor& b) override { cuda::add_inplace(a, b); }
  void add_rms_norm(Tensor& x, const Tensor& delta, const Tensor& weight, float eps,
                    Tensor& y) override {
    cuda::add_rms_norm(x, delta, weight, eps, y);
  }
  void gather_columns(const Tensor& x, const Tensor& order, Tensor& y) override {
    cuda::gather_columns(x, order, y);
  }
  void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) override {
    cuda::embedding(table, ids, out);
  }
  void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    cuda::swiglu(gate, up, out);
  }
  void rope_inplace(Tensor& x, const Tensor& positions, const Tensor& inv_freq) override {
    cuda::rope_inplace(x, positions, inv_freq);
  }
  void attention_accumulate(const Tensor& q, const Tensor& k, const Tensor& v,
                            int64_t visible_offset, float scale,
                            ops::AttentionState& state) override {
    cuda::attention_accumulate(q, k, v, visible_offset, scale, state);
  }
  std::shared_ptr<void> prepare_paged_attention(const std::vector<ops::PagedSequence>& seqs,
                                                int64_t m, int64_t n_heads, const Tensor& k_pool,
                                                int64_t keys_capacity, DType q_dtype) override {
    return cuda::prepare_paged_attention(seqs, m, n_heads, k_pool, keys_capacity, q_dtype);
  }
  void refill_paged_attention(ops::PagedAttentionWork& work) override {
    cuda::refill_paged_attention(work.device_plan, work.sequences);
  }
  void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool,
                                  const ops::PagedAttentionWork& work, float scale,
                                  ops::KvScale kv_scale, ops::AttentionState& state) override {
    cuda::paged_attention_accumulate(q, k_pool, v_pool, work.device_plan, scale, kv_scale, state);
  }
  void attention_merge(ops::AttentionState& state, const ops::AttentionState& other) override {
    cuda::attention_merge(state, other);
  }
  void attention_finish(const ops::AttentionState& state, Tensor& out) override {
    cuda::attention_finish(state, out);
  }
  void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v,
                const Tensor& slots, ops::KvScale kv_scale) override {
    cuda::store_kv(k_pool, v_pool, k, v, slots, kv_scale);
  }
  void round_through(Tensor& x, DType type, float scale) override {
    cuda::round_through(x, type, scale);
  }
  void convert(const Tensor& src, Tensor& dst) override { cuda::convert(src, dst); }
  void fill_uniform(Tensor& out, int64_t full_cols, int64_t row0, int64_t col0, uint64_t seed,
                    float offset, float scale) override {
    cuda::fill_uniform(out, full_cols, row0, col0, seed, offset, scale);
  }
  void repetition_penalty(Tensor& logits, const Tensor& ids, const Tensor& offsets,
                          float penalty) override {
    cuda::repetition_penalty(logits, ids, offsets, penalty);
  }
  void top_k(const Tensor& logits, int k, Tensor& values, Tensor& ids) override {
    cuda::top_k(logits, k, values, ids);
  }
  void synchronize(int index) override { cuda::synchronize(index); }
  std::unique_ptr<DeviceGraph> capture(int index, const std::function<void()>& record) override {
    auto graph = std::make_unique<StreamGraph>(index);
    graph->begin_capture();
    try {
      record();
      graph->end_capture();
    } catch (...) {
      graph->abandon_capture();
      throw;
    }
    return std::make_unique<Graph>(std::move(graph));
  }
};

}  // namespace

Backend& cuda_backend() {
  static CudaBackend b;
  return b;
}

}  // namespace tessera::cuda
