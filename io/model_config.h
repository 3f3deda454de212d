// The hyper-parameters of a Llama-family model, as stored in the root attributes of the model file.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/ops.h"
#include "parallel/layout.h"

namespace tessera {

struct ModelConfig {
  std::string architecture;  // "llama" (Llama 2/3, SmolLM), "mistral" or "qwen2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;  // context window
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  ops::RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2)

  // Throws with a sentence naming the inconsistent numbers.
  void validate() const;
  int64_t q_size() const { return num_heads * head_dim; }
  int64_t kv_size() const { return num_kv_heads * head_dim; }
  // The context window (prompt and output tokens) with a cap of max_context (0: none; throws
  // below 0): the model's, or the cap where it is smaller.
  int64_t context_window(int64_t max_context = 0) const;
};

// The sizes that constrain a layout (parallel/layout.h), with unblocked (plain) weights;
// io/model_store.h's layout_dims adds a model file's storage blocks.
ModelDims layout_dims(const ModelConfig& c);

// Architectures tessera runs; anything else is refused by name at import.
bool is_supported_architecture(const std::string& arch);
// "none", "linear" or "llama3", as stored in the model file.
const char* rope_scaling_name(ops::RopeScaling::Type type);

}  // namespace tessera
