// The CPU backend: kernels/ops.h on host tensors, by the implementations in ops_cpu.cpp. Work runs
// when it is called (nothing to wait for) and there are no graphs.
#include "kernels/backend.h"
#include "kernels/cpu/ops_cpu.h"
#include "kernels/cpu/quant_linear.h"
#include "kernels/cpu/skinny_gemm.h"

namespace tessera {
namespace {

class CpuBackend final : public Backend {
 public:
  bool computes_on(DType weight, DType activations) const override {
    return activations == DType::kF32 && ops::cpu::computes_on(weight);
  }
  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override {
    ops::cpu::linear_group(x, {{&w, bias, &y}});
  }
  ops::RowTiling linear_row_tiling(DType weight) const override {
    // Up to max_rows rows, a row's result is the same bits whatever else is in x: the integer
    // kernels (or, without them, the skinny kernel on quantized weights) up to kIntegerMaxRows,
    // the skinny kernel on float weights up to kSkinnyMaxRows; OpenBLAS past them.
    return {
        .tile = ops::cpu::integer_row_tile(weight),
        .max_rows = dtype_is_quantized(weight) ? ops::cpu::kIntegerMaxRows : ops::kSkinnyMaxRows};
  }
  void linear_group(const Tensor& x, const std::vector<ops::LinearPart>& parts) override {
    ops::cpu::linear_group(x, parts);
  }
  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) override {
    ops::cpu::rms_norm(x, weight, eps, y);
  }
  void add_inplace(Tensor& a, const Tensor& b) override { ops::cpu::add_inplace(a, b); }
  void add_rms_norm(Tensor& x, const Tensor& delta, const Tensor& weight, float eps,
                    Tensor& y) override {
    ops::cpu::add_inplace(x, delta);
    ops::cpu::rms_norm(x, weight, eps, y);
  }
  void gather_columns(const Tensor& x, const Tensor& order, Tensor& y) override {
    ops::cpu::gather_columns(x, order, y);
  }
  void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) override {
    ops::cpu::embedding(table, ids, out);
  }
  void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    ops::cpu::swiglu(gate, up, out);
  }
  void rope_inplace(Tensor& x, const Tensor& positions, const Tensor& inv_freq) override {
    ops::cpu::rope_inplace(x, positions, inv_freq);
  }
  void attention_accumulate(const Tensor& q, const Tensor& k, const Tensor& v,
                            int64_t visible_offset, float scale,
                            ops::AttentionState& state) override {
    ops::cpu::attention_accumulate(q, k, v, visible_offset, scale, state);
  }
  std::shared_ptr<void> prepare_paged_attention(const std::vector<ops::PagedSequence>&, int64_t,
                                                int64_t, const Tensor&, int64_t, DType) override {
    return nullptr;  // the CPU reads the work's sequences
  }
  void refill_paged_attention(ops::PagedAttentionWork&) override {}
  void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool,
                                  const ops::PagedAttentionWork& work, float scale,
                                  ops::KvScale kv_scale, ops::AttentionState& state) override {
    ops::cpu::paged_attention_accumulate(q, k_pool, v_pool, work.sequences, scale, kv_scale, state);
  }
  void attention_merge(ops::AttentionState& state, const ops::AttentionState& other) override {
    ops::cpu::attention_merge(state, other);
  }
  void attention_finish(const ops::AttentionState& state, Tensor& out) override {
    ops::cpu::attention_finish(state, out);
  }
  void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v,
                const Tensor& slots, ops::KvScale kv_scale) override {
    ops::cpu::store_kv(k_pool, v_pool, k, v, slots, kv_scale);
  }
  void round_through(Tensor& x, DType type, float scale) override {
    ops::cpu::round_through(x, type, scale);
  }
  void convert(const Tensor& src, Tensor& dst) override { ops::cpu::convert(src, dst); }
  void fill_uniform(Tensor& out, int64_t full_cols, int64_t row0, int64_t col0, uint64_t seed,
                    float offset, float scale) override {
    ops::cpu::fill_uniform(out, full_cols, row0, col0, seed, offset, scale);
  }
  void repetition_penalty(Tensor& logits, const Tensor& ids, const Tensor& offsets,
                          float penalty) override {
    ops::cpu::repetition_penalty(logits, ids, offsets, penalty);
  }
  void top_k(const Tensor& logits, int k, Tensor& values, Tensor& ids) override {
    ops::cpu::top_k(logits, k, values, ids);
  }
  void synchronize(int) override {}
  std::unique_ptr<DeviceGraph> capture(int, const std::function<void()>&) override {
    return nullptr;
  }
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend b;
  return b;
}

}  // namespace tessera
