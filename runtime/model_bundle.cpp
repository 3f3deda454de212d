#include "runtime/model_bundle.h"

#include <chrono>

namespace tessera {

ModelBundle ModelBundle::load(const std::string& path) {
  const auto t0 = std::chrono::steady_clock::now();
  ModelReader reader(path);
  ModelBundle b;
  b.path = path;
  b.tokenizer = std::make_unique<Tokenizer>(reader.read_tokenizer());
  TESSERA_CHECK(b.tokenizer->vocab_size() <= reader.config().vocab_size,
                path << ": the tokenizer has " << b.tokenizer->vocab_size()
                     << " tokens but the model's vocabulary is " << reader.config().vocab_size);
  b.model = std::make_unique<LlamaModel>(reader.config(), LlamaWeights::load(reader));
  b.weight_bytes_read = reader.bytes_read();
  b.load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return b;
}

}  // namespace tessera
