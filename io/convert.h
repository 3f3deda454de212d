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
  // Stored weight type: "auto" keeps f16/bf16 sources as they are and stores everything else
  // (f32, dequantized Q8_0/Q4_0/Q4_1) as f32; or force "f32", "f16", "bf16".
  std::string dtype = "auto";
  bool quiet = false;
};

struct ConvertReport {
  ModelConfig config;
  int64_t tensors = 0;
  uint64_t bytes_written = 0;
};

// Decides from the path: a directory is a Hugging Face checkpoint, a file must be GGUF.
ConvertReport convert_model(const std::string& input, const std::string& output,
                            const ConvertOptions& options);

// Exposed for tests.
ModelConfig config_from_hf(const nlohmann::json& config_json, const std::string& where);
ModelConfig config_from_gguf(const nlohmann::json& metadata, const std::string& where);
TokenizerData tokenizer_from_gguf(const nlohmann::json& metadata, const std::string& where);
// Undoes llama.cpp's q/k permutation for interleaved RoPE: rows (heads, head_dim) of a weight
// (or bias) with `cols` columns, in place.
void unpermute_rope_rows(float* data, int64_t heads, int64_t head_dim, int64_t cols);

}  // namespace tessera
