// The canonical tensors of a Llama-family model file and their shapes, in one place: the
// converter checks what it writes against this table and the runtime loads by it.
#pragma once

#include <string>
#include <vector>

#include "io/model_config.h"
#include "kernels/tensor.h"

namespace tessera {

struct TensorSpec {
  std::string name;
  Shape shape;
  bool required = true;  // false: optional (rope_freqs.weight)
};

// Every tensor the config implies, per layer in order. Names as in io/model_store.h.
std::vector<TensorSpec> llama_tensor_specs(const ModelConfig& config);

// The per-layer part of a canonical name ("self_attn.q_proj.weight" for
// "layers.3.self_attn.q_proj.weight"); empty when the name is not a per-layer one.
std::string layer_suffix(const std::string& name);

}  // namespace tessera
