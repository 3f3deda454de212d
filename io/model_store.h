// The tessera model file (HDF5). Layout, format version 2:
//
//   /                 attributes: format = "tessera-model", format_version, architecture and every
//                     hyper-parameter of ModelConfig, source (what it was converted from),
//                     weight_orientation = "out_features x in_features",
//                     rope_convention = "rotate_half" (dimension i pairs with i + head_dim/2, as
//                     Hugging Face Llama; GGUF's interleaved q/k rows are permuted back at import)
//   /tokenizer        attributes: model, pre, bos_id, eos_id, unk_id, pad_id, add_bos, add_eos,
//                     add_space_prefix; datasets: tokens_bytes (u8) + tokens_offsets (i64, n+1),
//                     merges_bytes + merges_offsets, scores (f32), token_types (i32),
//                     stop_ids (i32), chat_template (u8)
//   /weights/<name>   one dataset per tensor, unsharded, row-major; linear weights are
//                     (out_features, in_features). Attribute dtype = f32 | f16 | bf16 (f16 and bf16
//                     are stored as 16-bit integers), or a quantized format q8_0 | q4_0 | q4_1 |
//                     q5_0 | q5_1 | q4_k | q5_k | q6_k (kernels/quant.h: GGML's block layouts):
//                     then the dataset is u8 (rows, row bytes), each row its in_features / B
//                     blocks as they are, with attributes shape = (rows, in_features) (i64) and
//                     block_elements = B, block_bytes. Chunked by row blocks with the HDF5
//                     Fletcher32 filter: every chunk's checksum is verified by every read,
//                     whole or partial.
//   /weights/<linear>.input_order  (optional; i32, in_features): the input feature each stored
//                     column of <linear>.weight reads, for weights whose columns are stored in
//                     another order than their input features (GPTQ act-order checkpoints, their
//                     columns sorted by group: io/quantized_checkpoint.h).
//   /weights/layers.i.self_attn.{k,v}_scale  (optional; f32, (1)): the layer's scales of an FP8
//                     KV cache (--kv-cache-dtype fp8 keeps e4m3(k / k_scale)), from checkpoints
//                     calibrated for one (vLLM's k_scale and v_scale); 1 where absent.
//
// Version 1 (before quantized weights: f32, f16 and bf16 only, stored as here) is read too.
//
// Canonical weight names: embed_tokens.weight (vocab, hidden), norm.weight (hidden),
// lm_head.weight (vocab, hidden; absent when tied), rope_freqs.weight (head_dim/2; optional
// per-frequency divisors), and per layer i: layers.i.input_layernorm.weight,
// layers.i.self_attn.{q,k,v,o}_proj.weight, layers.i.self_attn.{q,k,v}_proj.bias (Qwen2),
// layers.i.post_attention_layernorm.weight, layers.i.mlp.{gate,up,down}_proj.weight.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "io/tokenizer.h"
#include "kernels/tensor.h"

namespace tessera {

inline constexpr int kModelFormatVersion = 2;

struct WeightInfo {
  std::string name;
  Shape shape;  // elements (a quantized weight's logical shape)
  DType dtype;  // as stored
  uint64_t bytes() const { return dtype_bytes(dtype, shape_numel(shape)); }
};

class ModelWriter {
 public:
  // Writes to PATH.partial and renames to PATH on finish(), so a killed convert never leaves a
  // file that looks complete.
  explicit ModelWriter(const std::string& path);
  ~ModelWriter();
  ModelWriter(const ModelWriter&) = delete;
  ModelWriter& operator=(const ModelWriter&) = delete;

  void write_config(const ModelConfig& config, const std::string& source);
  void write_tokenizer(const TokenizerData& tokenizer);
  // values are float32; they are stored as `stored` (f32, f16, bf16, or a quantized format:
  // a 2-d weight whose rows are whole blocks, quantized by kernels/quant.h).
  void write_weight(const std::string& name, const Shape& shape, const float* values,
                    DType stored);
  // bytes are the weight already in `stored` (as a GGUF file holds it): kept as they are.
  void write_weight_bytes(const std::string& name, const Shape& shape, const void* bytes,
                          DType stored);
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class ModelReader {
 public:
  explicit ModelReader(const std::string& path);
  ~ModelReader();
  ModelReader(const ModelReader&) = delete;
  ModelReader& operator=(const ModelReader&) = delete;

  const std::string& path() const;
  const ModelConfig& config() const;
  const std::string& source() const;
  TokenizerData read_tokenizer() const;
  std::vector<WeightInfo> weights() const;  // sorted by name
  bool has_weight(const std::string& name) const;
  WeightInfo weight_info(const std::string& name) const;
  // Reads a whole weight as float32 (converting f16/bf16, dequantizing), on the CPU.
  Tensor read_weight(const std::string& name) const;
  // Reads the hyperslab rows [r0, r1) x columns [c0, c1) of a 2-d weight (or elements [r0, r1) of
  // a 1-d one; c0 = c1 = 0 then), as float32 or as stored. Only those bytes' chunks are read.
  // The columns of a quantized weight must be whole blocks (throws naming the block size).
  enum class As { kFloat32, kStored };
  Tensor read_weight_slice(const std::string& name, int64_t r0, int64_t r1, int64_t c0,
                           int64_t c1, As as = As::kFloat32) const;
  // Bytes of weight data this reader has requested from the file so far.
  uint64_t bytes_read() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The sizes that constrain a layout of the file's model: its config's, and the largest blocks
// any layer stores its o_proj and down_proj weights in (but for weights with an input order,
// which a rank regroups for its features whatever the split).
ModelDims layout_dims(const ModelReader& reader);

}  // namespace tessera
