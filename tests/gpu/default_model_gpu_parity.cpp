// The default model on the GPU path against the CPU path, end to end:
//   default_model_gpu_parity MODEL.h5
//   default_model_gpu_parity --random CONFIG.json   (random weights of that shape: for GPU
//                                                    machines the model file cannot reach)
// float32 on both: the greedy tokens of 32 steps after a prompt must be identical, and the
// logits of every step within 1e-4 of max|logit|; bf16 weights and activations: the drift of the
// prompt's logits and how many of the 32 greedy tokens agree are reported (bf16 may diverge
// after a near tie: at the first difference, the two tokens' gap in the CPU's logits and the
// largest error of bf16's logits there are reported too). On cuda:0 where there is a GPU, otherwise
// on an emulated GPU (the kernel sources on the CUDA emulator; the matmuls there are the simple
// kernel, not cuBLAS). Prints one JSON line; exits 1 when the float32 run differs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "kernels/cuda/cuda_memory.h"
#include "launch/options.h"
#include "runtime/model_bundle.h"
#include "runtime/sampler.h"
#include "runtime/single_sequence.h"

namespace {

using namespace tessera;

struct Run {
  std::vector<int32_t> tokens;
  std::vector<Tensor> logits;  // the prompt's rows, then one row per step
  double seconds = 0;
  int64_t graph_replays = 0;
};

// The model under test: the file's, or random weights of a config's shape.
struct Source {
  std::unique_ptr<ModelReader> reader;
  ModelConfig config;
  LlamaModel load(Communicator* local, const LoadOptions& o) const {
    return reader ? LlamaModel::load(*reader, local, local, nullptr, o)
                  : LlamaModel::random(config, 5, local, local, nullptr, o);
  }
};

// Greedy decoding; with graphs, the decode steps are CUDA graph replays.
Run greedy(const Source& source, Device device, DType dtype, const std::vector<int32_t>& prompt,
           int steps, bool graphs = false) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::unique_ptr<Communicator> local = make_local_communicator();
  LoadOptions o;
  o.device = device;
  o.dtype = dtype;
  LlamaModel model = source.load(local.get(), o);
  RunnerOptions ro;
  ro.num_blocks = (int64_t(prompt.size()) + steps + ro.block_size) / ro.block_size;
  if (graphs) ro.graph_batch = 1, ro.graph_keys = ro.num_blocks * ro.block_size;
  ModelRunner runner(model, ro);
  SingleSequence sequence(runner);
  Sampler argmax{SamplingParams{}};
  Run r;
  Tensor logits = sequence.feed(prompt, -1);
  const int64_t vocab = model.config().vocab_size;
  for (int s = 0; s < steps; ++s) {
    r.logits.push_back(logits);
    const int32_t next =
        argmax.sample(logits.data<float>() + (logits.dim(0) - 1) * vocab, vocab, {});
    r.tokens.push_back(next);
    if (s + 1 < steps) logits = sequence.feed({next}, 1);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.graph_replays = runner.graph_replays();
  return r;
}

float drift(const Tensor& want, const Tensor& got) {
  float scale = 0, diff = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    scale = std::max(scale, std::abs(want.data<float>()[i]));
    diff = std::max(diff, std::abs(want.data<float>()[i] - got.data<float>()[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace

int main(int argc, char** argv) {
  const bool random = argc == 3 && std::string(argv[1]) == "--random";
  if (argc != 2 && !random) {
    std::fprintf(stderr, "usage: default_model_gpu_parity MODEL.h5 | --random CONFIG.json\n");
    return 2;
  }
  try {
    Source source;
    std::vector<int32_t> prompt;
    if (random) {
      source.config = cli::load_model_config(argv[2]);
      prompt = {1, 504, 3458, 282, 4649, 314};  // any ids below the vocabulary size
    } else {
      source.reader = std::make_unique<ModelReader>(argv[1]);
      source.config = source.reader->config();
      prompt = Tokenizer(source.reader->read_tokenizer()).encode("The capital of France is");
    }
    const int steps = 32;
    Device gpu = Device::cuda(0);
    std::string where;
    if (cuda::device_count() > 0) {
      cuda::reserve_memory(0, size_t(8) << 30);
      where = cuda::device_name(0);
    } else {
      gpu = Device::cuda(9);
      cuda::emulate_gpu(9, size_t(3) << 30);
      where = "emulated (" + cuda::no_device_reason() + ")";
    }
    const Run cpu = greedy(source, Device::cpu(), DType::kF32, prompt, steps);
    const Run f32 = greedy(source, gpu, DType::kF32, prompt, steps);
    // What users run: bf16, and the decode steps as CUDA graph replays; and float32 graphs.
    const Run f32_graphs = greedy(source, gpu, DType::kF32, prompt, steps, true);
    const Run bf16 = greedy(source, gpu, DType::kBF16, prompt, steps, true);
    float worst = 0, worst_graphs = 0;
    for (int s = 0; s < steps; ++s) {
      worst = std::max(worst, drift(cpu.logits[size_t(s)], f32.logits[size_t(s)]));
      worst_graphs =
          std::max(worst_graphs, drift(cpu.logits[size_t(s)], f32_graphs.logits[size_t(s)]));
    }
    int same_f32 = 0, same_f32_graphs = 0, same_bf16 = 0;
    for (int s = 0; s < steps; ++s) {
      same_f32 += cpu.tokens[size_t(s)] == f32.tokens[size_t(s)];
      same_f32_graphs += cpu.tokens[size_t(s)] == f32_graphs.tokens[size_t(s)];
      same_bf16 += cpu.tokens[size_t(s)] == bf16.tokens[size_t(s)];
    }
    int first_bf16_difference = steps;
    for (int s = 0; s < steps; ++s)
      if (cpu.tokens[size_t(s)] != bf16.tokens[size_t(s)]) {
        first_bf16_difference = s;
        break;
      }
    // At the first difference (the same context until then): how far apart the two tokens are in
    // the CPU's logits, against how far bf16's logits are from the CPU's there. A margin below
    // the error is a near tie that bf16's rounding decides.
    float tie_margin = 0, bf16_error = 0;
    if (first_bf16_difference < steps) {
      const size_t s = size_t(first_bf16_difference);
      const Tensor& want = cpu.logits[s];
      const Tensor& got = bf16.logits[s];
      const int64_t vocab = want.dim(1), last = (want.dim(0) - 1) * vocab;
      tie_margin =
          want.data<float>()[last + cpu.tokens[s]] - want.data<float>()[last + bf16.tokens[s]];
      for (int64_t v = 0; v < vocab; ++v)
        bf16_error = std::max(bf16_error,
                              std::abs(want.data<float>()[last + v] - got.data<float>()[last + v]));
    }
    const bool graphs_ran =
        f32_graphs.graph_replays == steps - 1 && bf16.graph_replays == steps - 1;
    const bool ok = same_f32 == steps && worst <= 1e-4f && same_f32_graphs == steps &&
                    worst_graphs <= 1e-4f && graphs_ran;
    std::printf(
        "{\"gpu\": \"%s\", \"steps\": %d, \"f32_tokens_identical\": %d, \"f32_max_logit_drift\": "
        "%.3g, \"f32_graphs_tokens_identical\": %d, \"f32_graphs_max_logit_drift\": %.3g, "
        "\"graph_replays\": %lld, \"bf16_prompt_logit_drift\": %.3g, \"bf16_tokens_identical\": "
        "%d, "
        "\"bf16_first_difference\": %d, \"bf16_difference_cpu_logit_margin\": %.3g, "
        "\"bf16_difference_max_logit_error\": %.3g, \"seconds\": {\"cpu\": %.2f, \"gpu_f32\": "
        "%.2f, "
        "\"gpu_f32_graphs\": %.2f, \"gpu_bf16_graphs\": %.2f}, \"ok\": %s}\n",
        where.c_str(), steps, same_f32, worst, same_f32_graphs, worst_graphs,
        (long long)f32_graphs.graph_replays, drift(cpu.logits[0], bf16.logits[0]), same_bf16,
        first_bf16_difference, tie_margin, bf16_error, cpu.seconds, f32.seconds, f32_graphs.seconds,
        bf16.seconds, ok ? "true" : "false");
    if (!ok) {
      std::fprintf(stderr,
                   "the float32 GPU path differs from the CPU's: %d of %d tokens, drift %g; with "
                   "graphs %d tokens, drift %g, %lld replays\n",
                   same_f32, steps, worst, same_f32_graphs, worst_graphs,
                   (long long)f32_graphs.graph_replays);
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "default_model_gpu_parity: %s\n", e.what());
    return 1;
  }
}
