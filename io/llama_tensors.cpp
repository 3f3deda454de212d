#include "io/llama_tensors.h"

namespace tessera {

std::vector<TensorSpec> llama_tensor_specs(const ModelConfig& c) {
  const int64_t h = c.hidden_size, f = c.intermediate_size;
  std::vector<TensorSpec> s = {{"embed_tokens.weight", {c.vocab_size, h}},
                               {"norm.weight", {h}},
                               {"rope_freqs.weight", {c.head_dim / 2}, false}};
  if (!c.tie_word_embeddings) s.push_back({"lm_head.weight", {c.vocab_size, h}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    s.push_back({p + "input_layernorm.weight", {h}});
    s.push_back({p + "self_attn.q_proj.weight", {c.q_size(), h}});
    s.push_back({p + "self_attn.k_proj.weight", {c.kv_size(), h}});
    s.push_back({p + "self_attn.v_proj.weight", {c.kv_size(), h}});
    if (c.attention_bias) {
      s.push_back({p + "self_attn.q_proj.bias", {c.q_size()}});
      s.push_back({p + "self_attn.k_proj.bias", {c.kv_size()}});
      s.push_back({p + "self_attn.v_proj.bias", {c.kv_size()}});
    }
    s.push_back({p + "self_attn.o_proj.weight", {h, c.q_size()}});
    s.push_back({p + "post_attention_layernorm.weight", {h}});
    s.push_back({p + "mlp.gate_proj.weight", {f, h}});
    s.push_back({p + "mlp.up_proj.weight", {f, h}});
    s.push_back({p + "mlp.down_proj.weight", {h, f}});
    // (the input orders of weights stored with their columns reordered, io/model_store.h)
    for (const auto& [linear, in] : {std::pair{"self_attn.q_proj", h}, {"self_attn.k_proj", h},
                                     {"self_attn.v_proj", h}, {"self_attn.o_proj", c.q_size()},
                                     {"mlp.gate_proj", h}, {"mlp.up_proj", h},
                                     {"mlp.down_proj", f}})
      s.push_back({p + linear + ".input_order", {in}, false});
    // (an FP8 KV cache's scales, io/model_store.h)
    s.push_back({p + "self_attn.k_scale", {1}, false});
    s.push_back({p + "self_attn.v_scale", {1}, false});
  }
  return s;
}

std::string layer_suffix(const std::string& name) {
  if (name.rfind("layers.", 0) != 0) return "";
  const size_t dot = name.find('.', 7);
  return dot == std::string::npos ? "" : name.substr(dot + 1);
}

}  // namespace tessera
