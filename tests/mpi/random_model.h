// A model file with random weights for the MPI tests, written by rank 0 and read by all.
#pragma once

#include <cmath>
#include <filesystem>
#include <random>
#include <string>

#include <unistd.h>

#include "io/llama_tensors.h"
#include "io/model_store.h"
#include "parallel/mpi_communicator.h"
#include "runtime/llama_model.h"
#include "tests/gpu_or_emulated.h"  // test_gpu(): cuda:0, shared by every rank, or emulated

namespace tessera {

// GPT-2's byte -> printable character mapping, so a 256-token byte-level vocabulary is valid.
inline std::string byte_token(int b) {
  auto printable = [](int x) {
    return (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255);
  };
  int cp = b;
  if (!printable(b)) {
    int n = 0;
    for (int x = 0; x < b; ++x) n += !printable(x);
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

// Rank 0 writes `config` with normal(0, 1/sqrt(in)) weights and norms near 1 to a temporary
// file named after `name` and its own pid (tests of several world sizes may run at once), its
// matrices stored as `matrices` (f32, or a quantized format); every rank returns that path after
// a barrier.
inline std::string write_random_model(Communicator& world, const ModelConfig& c,
                                      const std::string& name, unsigned seed,
                                      DType matrices = DType::kF32) {
  std::string path =
      (std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "_" + name)).string();
  world.broadcast_bytes(path, 0);
  if (world.rank() == 0) {
    ModelWriter w(path);
    w.write_config(c, "mpi test");
    TokenizerData t;
    t.model = "bpe_byte";
    t.pre = "gpt2";
    for (int b = 0; b < 256; ++b) t.tokens.push_back(byte_token(b));
    w.write_tokenizer(t);
    std::mt19937 g(seed);
    for (const TensorSpec& s : llama_tensor_specs(c)) {
      if (!s.required) continue;
      std::vector<float> v(static_cast<size_t>(shape_numel(s.shape)));
      const bool norm = s.name.find("norm") != std::string::npos;
      const float scale = s.shape.size() == 2 ? 1.0f / std::sqrt(float(s.shape[1])) : 0.2f;
      for (float& x : v) x = (norm ? 1.0f : 0.0f) + scale * std::normal_distribution<float>()(g);
      w.write_weight(s.name, s.shape, v.data(), s.shape.size() == 2 ? matrices : DType::kF32);
    }
    w.finish();
  }
  world.barrier();
  return path;
}

// A random model file and its one-rank run, which every parallel layout is compared against.
// The file is removed when every rank is done with it.
struct ReferenceModel {
  ReferenceModel(const ModelConfig& config, const std::string& name, unsigned seed,
                 DType matrices = DType::kF32)
      : world(MpiCommunicator::world()),
        path(write_random_model(*world, config, name, seed, matrices)),
        reader(path),
        tokenizer(reader.read_tokenizer()),
        local(make_local_communicator()),
        model(LlamaModel::load(reader, local.get(), local.get())) {}
  ~ReferenceModel() {
    world->barrier();
    if (world->rank() == 0) std::filesystem::remove(path);
  }
  std::unique_ptr<MpiCommunicator> world;
  std::string path;
  ModelReader reader;
  Tokenizer tokenizer;
  std::unique_ptr<Communicator> local;
  LlamaModel model;  // the one-rank run
};

}  // namespace tessera

namespace tessera {


// max|want - got| / max|want| over two tensors of the same shape.
inline float relative_max_diff(const Tensor& want, const Tensor& got) {
  float scale = 0, diff = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    scale = std::max(scale, std::abs(want.data<float>()[i]));
    diff = std::max(diff, std::abs(want.data<float>()[i] - got.data<float>()[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace tessera
