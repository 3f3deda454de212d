// A random model with Llama-3-70B's structure scaled down in width: 80 layers, 64 query / 8 KV
// heads, FFN 3.5x the width (28672 / 8192), vocabulary about 15.6x the width (128256 / 8192).
// Run with the layouts that use the whole world (with 8 ranks: TP=2 x PP=4 and TP=8), against the
// one-rank run of the same file.
#include <gtest/gtest.h>

#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"
#include "runtime/generator.h"
#include "runtime/single_sequence.h"
#include "tests/mpi/random_model.h"

namespace tessera {
namespace {

ModelConfig llama70b_shaped() {
  ModelConfig c;
  c.architecture = "llama";
  c.num_layers = 80;
  c.num_heads = 64;
  c.num_kv_heads = 8;
  c.hidden_size = 128;  // 8192 / 64
  c.head_dim = 2;
  c.intermediate_size = 448;  // 3.5 x 128
  c.vocab_size = 2000;        // 15.6 x 128, divisible by 8
  c.max_position_embeddings = 128;
  c.rope_theta = 500000.0f;
  return c;
}

TEST(Llama70BShape, LayoutsAgreeWithOneRank) {
  ReferenceModel ref(llama70b_shaped(), "tessera_70b_shape.h5", 70);
  const int p = ref.world->size();
  const ModelReader& reader = ref.reader;
  const Tokenizer& tok = ref.tokenizer;
  const LlamaModel& reference = ref.model;
  const std::vector<int32_t> prompt = {1, 1999, 500, 42, 7, 1234, 99, 3};
  const Tensor want = sequence_logits(reference, prompt);
  GenerationRequest req;
  req.prompt = prompt;
  req.max_tokens = 12;
  req.ignore_eos = true;
  const std::vector<int32_t> want_tokens = Generator(reference, tok).generate(req).tokens;

  int tried = 0;
  for (const auto& [tp, pp] : {std::pair{2, 4}, {8, 1}, {4, 2}, {2, 2}, {4, 1}, {2, 1}, {1, 2}}) {
    if (tp * pp != p) continue;
    ++tried;
    SCOPED_TRACE("tp " + std::to_string(tp) + " pp " + std::to_string(pp));
    ProcessGroups g = ProcessGroups::create({1, pp, 1, tp}, MpiCommunicator::world());
    const LlamaModel model = LlamaModel::load(reader, g.tp.get(), g.pp.get());
    const Tensor got = sequence_logits(model, prompt, -1, /*chunk=*/3);
    if (model.stage().last()) {
      EXPECT_LE(relative_max_diff(want, got), 1e-4f);
    }
    EXPECT_EQ(Generator(model, tok).generate(req).tokens, want_tokens);
  }
  EXPECT_GT(tried, 0) << "no 70B-style layout uses " << p << " ranks";
}

}  // namespace
}  // namespace tessera
