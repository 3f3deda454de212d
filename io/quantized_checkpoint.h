// Quantized Hugging Face checkpoints, as people publish 70B-class models: AWQ and GPTQ int4, and
// FP8 e4m3. Each quantized linear weight is imported into one of tessera's block formats
// (kernels/quant.h) without changing any value: every weight decodes to exactly what the
// checkpoint's own definition gives, computed in float32.
//
// AWQ (AutoAWQ's GEMM layout; quantization_config quant_method "awq", version "gemm"):
//   <module>.qweight  int32 (in, out / 8): eight 4-bit codes per word along the output features,
//                     nibble i (bits 4i..4i+3) holding feature 8c + [0, 2, 4, 6, 1, 3, 5, 7][i]
//   <module>.qzeros   int32 (in / g, out / 8), packed the same way
//   <module>.scales   f16 (in / g, out)
//   w[n][k] = (q[k][n] - z[k / g][n]) * s[k / g][n]
// GPTQ (AutoGPTQ / GPTQModel; quant_method "gptq"):
//   <module>.qweight  int32 (in / 8, out): eight codes per word along the input features, nibble
//                     i of word r holding feature 8r + i
//   <module>.qzeros   int32 (groups, out / 8), packed along the output features (nibble i:
//                     feature 8c + i); checkpoint_format "gptq" (the default) stores each zero
//                     minus one, "gptq_v2" as it is
//   <module>.scales   f16 (groups, out)
//   <module>.g_idx    int32 (in): the group of each input feature (optional)
//   w[n][k] = (q[k][n] - z[g_idx[k]][n]) * s[g_idx[k]][n]
//   Symmetric and asymmetric checkpoints both store their zeros, which are used as stored.
// Groups of 32 or 64 input features become i4_g32 blocks (a group of 64 as two blocks with its
// scale and zero), groups of 128, of a multiple of 128 or of the whole row (-1) i4_g128 blocks.
// FP8 (quant_method "fp8" with or without weight_block_size, "fbgemm_fp8", or
// "compressed-tensors" with float weights of 8 bits):
//   <module>.weight            float8_e4m3fn (out, in)
//   <module>.weight_scale      a scale per tensor (one value) or per output feature (out or
//                              (out, 1)), f32 / bf16 / f16;
//   or <module>.weight_scale_inv  (out / bo, in / bi) for blocks of bo x bi (bi a multiple of
//                              128; despite the name, a multiplier as DeepSeek-V3 and vLLM use it)
//   w[n][k] = e4m3(q[n][k]) * scale of (n, k), rounded to float32
//   becomes f8_e4m3 blocks (128 input features, the scale of their row and block). Activation
//   scales (input_scale) and KV-cache scales are not used: activations stay in the model's float
//   type (weight-only quantization, W8A16).
// GPTQ act-order (desc_act: a g_idx that is not k / g, each group still g features) is stored
// with its columns sorted by group (stably) and the feature each column reads: the linear gathers
// its input in that order (parallel/parallel_layers.h), a row-parallel shard takes the columns of
// its features (runtime/weight_source.h: read_reordered_columns).
// Layers without a quantized weight (lm_head, embeddings, norms, biases, modules_to_not_convert)
// are read as plain tensors. Anything else is refused by name, e.g. "AWQ version 'gemv_fast' is
// not supported".
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "kernels/dtype.h"

namespace tessera {

class SafetensorsCheckpoint;

struct CheckpointQuantization {
  enum class Method { kNone, kAwq, kGptq, kFp8 };
  Method method = Method::kNone;
  int64_t group_size = 0;    // AWQ / GPTQ: input features per group (-1: the whole row)
  bool legacy_zeros = true;  // GPTQ checkpoint_format "gptq": zeros stored minus one
  std::string description;   // e.g. "AWQ int4, groups of 128"
};

// The quantization a checkpoint folder declares: config.json's quantization_config, else
// quantize_config.json (AutoGPTQ) or quant_config.json (AutoAWQ) in `dir`; kNone when there is
// none. Throws, naming the setting, for what cannot be imported.
CheckpointQuantization checkpoint_quantization(const nlohmann::json& config,
                                               const std::string& dir);

// Whether tensor `name` of the checkpoint belongs to a quantized module rather than being a
// weight of its own: qweight / qzeros / scales / g_idx, or an FP8 weight and its scales.
// `module` is set to the module's path ("model.layers.0.self_attn.q_proj"), and `is_weight` to
// whether `name` is the tensor that carries its shape (qweight, or the FP8 weight).
bool quantized_module_tensor(const SafetensorsCheckpoint& ckpt, const CheckpointQuantization& q,
                             const std::string& name, std::string& module, bool& is_weight);

// The canonical KV-cache scales (io/model_store.h: layers.i.self_attn.k_scale, v_scale) that a
// checkpoint's tensor `name` ("model." prefix removed) gives, under the names vLLM maps: a tensor
// of layers.i.self_attn whose name ends in .k_scale (compressed-tensors' self_attn.k_scale,
// ModelOpt's k_proj.k_scale), .v_scale, or .kv_scale (older FP8 checkpoints: one scale for
// both), or k_proj / v_proj.output_scale (Quark's); none for any other tensor.
std::vector<std::string> kv_cache_scale_names(const std::string& name);

struct ImportedWeight {
  int64_t out_features = 0, in_features = 0;
  DType dtype = DType::kF32;
  std::vector<uint8_t> bytes;  // (out_features, in_features) as rows of dtype's blocks
  // Empty, or the input feature each column reads (GPTQ act-order: the columns sorted by group),
  // written as the weight's input_order (io/model_store.h).
  std::vector<int32_t> input_order;
};

// The quantized weight of `module` in tessera's blocks. Throws naming the tensor for a shape or a
// type that does not fit the format.
ImportedWeight import_quantized_weight(const SafetensorsCheckpoint& ckpt,
                                       const CheckpointQuantization& q, const std::string& module);

}  // namespace tessera
