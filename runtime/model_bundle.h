// What a rank needs to run a model file: its config, weights and tokenizer, loaded once.
#pragma once

#include <memory>
#include <string>

#include "io/tokenizer.h"
#include "parallel/process_groups.h"
#include "runtime/llama_model.h"

namespace tessera {

struct ModelBundle {
  std::string path;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
  uint64_t weight_bytes_read = 0;
  double load_seconds = 0;

  // Checks that the layout of `groups` can run the model (before any weight is read), then loads
  // this rank's shard. groups must outlive the bundle.
  static ModelBundle load(const std::string& path, ProcessGroups& groups,
                          const LoadOptions& options = {});
  // A model of config's shape with random weights (LlamaModel::random) and a stand-in byte-level
  // tokenizer: for benchmarks where the model file is not at hand (a GPU machine).
  static ModelBundle random(const ModelConfig& config, const std::string& name,
                            ProcessGroups& groups, const LoadOptions& options = {});
};

}  // namespace tessera
