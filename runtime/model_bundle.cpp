#include "runtime/model_bundle.h"

#include <chrono>

#include "parallel/layout.h"

namespace tessera {
namespace {

// Whether the layout of groups can run a model of these sizes (checked before any weight is read).
void check_runnable(const ModelDims& dims, const ProcessGroups& groups) {
  check_layout(groups.shape, groups.world->size(), dims);
}

}  // namespace

ModelBundle ModelBundle::load(const std::string& path, ProcessGroups& groups,
                              const LoadOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  ModelReader reader(path);
  check_runnable(layout_dims(reader), groups);
  ModelBundle b;
  b.path = path;
  b.tokenizer = std::make_unique<Tokenizer>(reader.read_tokenizer());
  TESSERA_CHECK(b.tokenizer->vocab_size() <= reader.config().vocab_size,
                path << ": the tokenizer has " << b.tokenizer->vocab_size()
                     << " tokens but the model's vocabulary is " << reader.config().vocab_size);
  b.model = std::make_unique<LlamaModel>(
      LlamaModel::load(reader, groups.tp.get(), groups.pp.get(), groups.sp.get(), options));
  b.weight_bytes_read = reader.bytes_read();
  b.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return b;
}

ModelBundle ModelBundle::random(const ModelConfig& c, const std::string& name,
                                ProcessGroups& groups, const LoadOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  check_runnable(layout_dims(c), groups);
  ModelBundle b;
  b.path = "random weights of " + name;
  b.tokenizer = std::make_unique<Tokenizer>(stand_in_tokenizer(c.vocab_size));
  b.model = std::make_unique<LlamaModel>(
      LlamaModel::random(c, 1, groups.tp.get(), groups.pp.get(), groups.sp.get(), options));
  b.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return b;
}

}  // namespace tessera
