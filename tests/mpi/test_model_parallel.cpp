// Tensor and pipeline parallelism against the one-rank run of the same model file, for every
// tp x pp layout that fits the world (TP > KV heads replicates KV heads; 5 layers split unevenly
// over stages; prefill in microbatches): logits agree to 1e-4 x max|logit|, tokens are identical.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "io/llama_tensors.h"
#include "io/model_store.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"
#include "runtime/generator.h"
#include "runtime/llama_model.h"

namespace tessera {
namespace {

// GPT-2's byte -> printable character mapping, so a 256-token byte-level vocabulary is valid.
std::string byte_token(int b) {
  int cp = b;
  if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
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

ModelConfig test_config(bool qwen) {
  ModelConfig c;
  c.architecture = qwen ? "qwen2" : "llama";
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_layers = 5;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = qwen;
  c.attention_bias = qwen;
  return c;
}

// Rank 0 writes a random model file; every rank then reads it.
std::string write_model(Communicator& world, bool qwen) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            (std::string("tessera_tp_") + (qwen ? "qwen" : "llama") + ".h5"))
                               .string();
  if (world.rank() == 0) {
    const ModelConfig c = test_config(qwen);
    ModelWriter w(path);
    w.write_config(c, "mpi test");
    TokenizerData t;
    t.model = "bpe_byte";
    t.pre = "gpt2";
    for (int b = 0; b < 256; ++b) t.tokens.push_back(byte_token(b));
    w.write_tokenizer(t);
    std::mt19937 g(qwen ? 2 : 1);
    for (const TensorSpec& s : llama_tensor_specs(c)) {
      if (!s.required) continue;
      std::vector<float> v(size_t(shape_numel(s.shape)));
      const bool norm = s.name.find("norm") != std::string::npos;
      const float scale = s.shape.size() == 2 ? 1.0f / std::sqrt(float(s.shape[1])) : 0.2f;
      for (float& x : v) x = (norm ? 1.0f : 0.0f) + scale * std::normal_distribution<float>()(g);
      w.write_weight(s.name, s.shape, v.data(), DType::kF32);
    }
    w.finish();
  }
  world.barrier();
  return path;
}

void check_against_one_rank(bool qwen) {
  auto world = MpiCommunicator::world();
  const int p = world->size();
  const std::string path = write_model(*world, qwen);
  ModelReader reader(path);
  Tokenizer tok(reader.read_tokenizer());
  auto local = make_local_communicator();
  const LlamaModel reference = LlamaModel::load(reader, local.get(), local.get());
  const std::vector<int32_t> prompt = {5, 77, 200, 3, 3, 150, 42, 9, 255, 17, 64};
  for (int tp = 1; tp <= p; tp *= 2)
    for (int pp = 1; tp * pp <= p && pp <= 4; pp *= 2) {
      if (tp * pp == 1) continue;
      SCOPED_TRACE("tp " + std::to_string(tp) + " pp " + std::to_string(pp));
      ProcessGroups g = ProcessGroups::create({p / (tp * pp), pp, 1, tp}, MpiCommunicator::world());
      const LlamaModel model = LlamaModel::load(reader, g.tp.get(), g.pp.get());
      EXPECT_EQ(model.shard().heads.q.size(), 8 / tp);
      EXPECT_EQ(model.shard().heads.kv.size(), tp <= 2 ? 2 / tp : 1);
      EXPECT_EQ(model.shard().layers, stage_layers(5, pp, g.coord.pp));

      SequenceKvCache ref_cache = reference.make_cache(64), cache = model.make_cache(64);
      const Tensor want = reference.forward(prompt, ref_cache, -1);
      const Tensor mine = model.prefill(prompt, cache, /*microbatch=*/4, -1);
      ASSERT_EQ(mine.defined(), model.stage().last());
      if (model.stage().last()) {
        const Tensor got = model.gather_logits(mine);
        ASSERT_EQ(got.shape(), want.shape());
        float scale = 0, diff = 0;
        for (int64_t i = 0; i < want.numel(); ++i) {
          scale = std::max(scale, std::abs(want.data<float>()[i]));
          diff = std::max(diff, std::abs(want.data<float>()[i] - got.data<float>()[i]));
        }
        EXPECT_LE(diff, 1e-4f * scale) << "max|diff| " << diff << " max|logit| " << scale;
      }

      GenerationRequest req;
      req.prompt = prompt;
      req.max_tokens = 24;
      req.ignore_eos = true;
      Generator one(reference, tok), many(model, tok);
      EXPECT_EQ(many.generate(req).tokens, one.generate(req).tokens);
      req.sampling.temperature = 0.9f;  // sampling from gathered logits: same seed, same tokens
      req.sampling.top_p = 0.95f;
      req.sampling.seed = 11;
      EXPECT_EQ(many.generate(req).tokens, one.generate(req).tokens);
    }
}

TEST(ModelParallel, LlamaGqaMatchesOneRank) { check_against_one_rank(false); }
TEST(ModelParallel, Qwen2BiasTiedMatchesOneRank) { check_against_one_rank(true); }

}  // namespace
}  // namespace tessera
