#include "io/model_config.h"

#include <algorithm>

namespace tessera {

const char* rope_scaling_name(ops::RopeScaling::Type type) {
  switch (type) {
    case ops::RopeScaling::Type::kLlama3: return "llama3";
    case ops::RopeScaling::Type::kLinear: return "linear";
    case ops::RopeScaling::Type::kNone: return "none";
  }
  return "none";
}

bool is_supported_architecture(const std::string& arch) {
  return arch == "llama" || arch == "mistral" || arch == "qwen2";
}

int64_t ModelConfig::context_window(int64_t max_context) const {
  TESSERA_CHECK(max_context >= 0, "the context cap must be >= 0, got " << max_context);
  return max_context == 0 ? max_position_embeddings
                          : std::min(max_context, max_position_embeddings);
}

void ModelConfig::validate() const {
  TESSERA_CHECK(is_supported_architecture(architecture),
                "architecture '" << architecture
                                 << "' is not supported (tessera runs llama, mistral and qwen2)");
  TESSERA_CHECK(vocab_size > 0 && hidden_size > 0 && intermediate_size > 0 && num_layers > 0 &&
                    num_heads > 0 && num_kv_heads > 0 && head_dim > 0,
                "model config has a non-positive size (vocab " << vocab_size << ", hidden "
                    << hidden_size << ", ffn " << intermediate_size << ", layers " << num_layers
                    << ", heads " << num_heads << "/" << num_kv_heads << ", head_dim " << head_dim
                    << ")");
  TESSERA_CHECK(num_heads % num_kv_heads == 0, "query heads (" << num_heads
                                                  << ") must be a multiple of KV heads ("
                                                  << num_kv_heads << ")");
  TESSERA_CHECK(head_dim % 2 == 0, "head_dim " << head_dim << " must be even for RoPE");
  TESSERA_CHECK(max_position_embeddings > 0,
                "context length " << max_position_embeddings << " must be positive");
  TESSERA_CHECK(rms_norm_eps > 0 && rope_theta > 0, "rms_norm_eps and rope_theta must be positive");
  using Type = ops::RopeScaling::Type;
  if (rope_scaling.type != Type::kNone)
    TESSERA_CHECK(rope_scaling.factor > 0, "rope scaling factor " << rope_scaling.factor
                                                                   << " must be positive");
  if (rope_scaling.type == Type::kLlama3)
    TESSERA_CHECK(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor &&
                      rope_scaling.low_freq_factor > 0 && rope_scaling.original_max_position > 0,
                  "llama3 rope scaling needs high_freq_factor > low_freq_factor > 0 and a "
                  "positive original context (got "
                      << rope_scaling.high_freq_factor << ", " << rope_scaling.low_freq_factor
                      << ", " << rope_scaling.original_max_position << ")");
}

ModelDims layout_dims(const ModelConfig& c) {
  ModelDims d;
  d.layers = c.num_layers;
  d.heads = c.num_heads;
  d.kv_heads = c.num_kv_heads;
  d.head_dim = c.head_dim;
  d.ffn = c.intermediate_size;
  d.vocab = c.vocab_size;
  return d;
}

}  // namespace tessera
