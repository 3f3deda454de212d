// Every kernel launcher of one build, in a table: the GPU's (nvcc, cuBLAS) or the CUDA
// emulator's (the same kernel sources compiled for the host; linear without cuBLAS). The Tensor
// ops on GPU tensors (kernels/cuda/cuda_ops.h) take the table of the memory a tensor lives in, so
// a GPU that is emulated (cuda::emulate_gpu) runs the whole GPU path on the host in tests.
#pragma once

#include "kernels/cuda/elementwise_launchers.h"
#include "kernels/cuda/linear_launchers.h"
#include "kernels/cuda/paged_attention_launcher.h"
#include "kernels/cuda/quant_linear_launchers.h"
#include "kernels/cuda/sampling_launchers.h"
#include "kernels/cuda/state_launchers.h"

namespace tessera::cuda {

struct Launchers {
  const char* name;  // "gpu" or "emulator"
  decltype(&device::rms_norm) rms_norm;
  decltype(&device::add_rms_norm) add_rms_norm;
  decltype(&device::swiglu) swiglu;
  decltype(&device::rope) rope;
  decltype(&device::embedding) embedding;
  decltype(&device::gather_columns) gather_columns;
  decltype(&device::linear) linear;
  decltype(&device::linear_simple) linear_simple;
  decltype(&device::add_bias) add_bias;
  decltype(&device::quant_linear) quant_linear;
  decltype(&device::dequantize_rows) dequantize_rows;
  decltype(&device::paged_attention) paged_attention;
  decltype(&device::repetition_penalty) repetition_penalty;
  decltype(&device::top_k) top_k;
  decltype(&device::add) add;
  decltype(&device::convert) convert;
  decltype(&device::fill_uniform) fill_uniform;
  decltype(&device::round_through) round_through;
  decltype(&device::attention_finish) attention_finish;
  decltype(&device::attention_merge) attention_merge;
  decltype(&device::store_kv) store_kv;
};

const Launchers& gpu_launchers();
const Launchers& emulator_launchers();

// The table of namespace ns (device or emulated), in Launchers' order: written once for both.
#define TESSERA_LAUNCHER_TABLE(ns, label)                                                        \
  ::tessera::cuda::Launchers {                                                                   \
    label, ns::rms_norm, ns::add_rms_norm, ns::swiglu, ns::rope, ns::embedding,                  \
        ns::gather_columns, ns::linear, ns::linear_simple, ns::add_bias, ns::quant_linear,       \
        ns::dequantize_rows, ns::paged_attention, ns::repetition_penalty, ns::top_k, \
        ns::add, ns::convert, ns::fill_uniform, ns::round_through, ns::attention_finish,         \
        ns::attention_merge, ns::store_kv                                                        \
  }

}  // namespace tessera::cuda
