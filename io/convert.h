// Import of a GGUF file or a Hugging Face checkpoint folder into the tessera model file
// (io/model_store.h). Every source ends in one orientation (out_features x in_features) and one
// RoPE convention (rotate-half): GGUF's llama q/k rows, permuted by its converter for interleaved
// RoPE, are permuted back here.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>

#include "io/model_config.h"
#include "io/tokenizer.h"

namespace tessera {

struct ConvertOptions {
  // Stored weight type: "auto" keeps every tensor in the source's type (f32, f16, bf16, or a
  // GGUF's quantized blocks, byte for byte); "f32", "f16" or "bf16" converts (dequantizes) all.
  std::string dtype = "auto";
  // Empty, or a format to quantize the matrices to with tessera's quantizer (kernels/quant.h):
  // q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, i4_g32, i4_g128, f8_e4m3, or the mix q4_k_m
  // (quantize_format below).
  // 1-d tensors (norms, biases) stay as dtype says.
  std::string quantize;
  bool quiet = false;
};

// The format --quantize `scheme` gives the matrix `name` (canonical) of a model of `layers`
// layers whose rows have `row` elements. A single format gives every matrix that format; q4_k_m
// (llama.cpp's mix) gives q6_k to the LM head (the embedding when it is tied) and to v_proj and
// down_proj in the first and last eighth of the layers and every third between, q4_k elsewhere.
// Rows that are not whole blocks take the nearest format that fits: q4_k -> q5_0, q5_k -> q5_1,
// q6_k -> q8_0, i4_g128 -> i4_g32, a 32-element format or f8_e4m3 -> f16. Throws naming the scheme
// when it is unknown.
DType quantize_format(const std::string& scheme, const std::string& name, int64_t layers,
                      int64_t row, bool tied_embeddings);
// Throws, naming `option` and the schemes there are, unless `scheme` is one of them.
void check_quantize_scheme(const std::string& scheme, const std::string& option);

struct ConvertReport {
  ModelConfig config;
  int64_t tensors = 0;
  uint64_t bytes_written = 0;
  std::string quantization;  // a quantized checkpoint's format ("AWQ int4, groups of 128"), or ""
  std::string kv_cache_scales;  // what became of its FP8 KV-cache scales, or ""
};

// Decides from the path: a directory is a Hugging Face checkpoint, a file must be GGUF.
ConvertReport convert_model(const std::string& input, const std::string& output,
                            const ConvertOptions& options);

// Exposed for tests.
ModelConfig config_from_hf(const nlohmann::json& config_json, const std::string& where);
ModelConfig config_from_gguf(const nlohmann::json& metadata, const std::string& where);
TokenizerData tokenizer_from_gguf(const nlohmann::json& metadata, const std::string& where);
// Undoes llama.cpp's q/k permutation for interleaved RoPE: rows (heads, head_dim) of a weight
// (or bias) of row_bytes bytes each (whatever their type: quantized rows move whole), in place.
void unpermute_rope_rows(uint8_t* data, int64_t heads, int64_t head_dim, size_t row_bytes);

}  // namespace tessera
