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
#include "parallel/sp_split.h"
#include "runtime/generator.h"
#include "runtime/llama_model.h"
#include "runtime/single_sequence.h"
#include "tests/mpi/random_model.h"

namespace tessera {
namespace {

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

ReferenceModel reference_model(bool qwen) {
  return ReferenceModel(test_config(qwen),
                        std::string("tessera_tp_") + (qwen ? "qwen" : "llama") + ".h5",
                        qwen ? 2 : 1);
}

void check_against_one_rank(bool qwen) {
  ReferenceModel ref = reference_model(qwen);
  const int p = ref.world->size();
  const ModelReader& reader = ref.reader;
  const Tokenizer& tok = ref.tokenizer;
  const LlamaModel& reference = ref.model;
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

      const Tensor want = sequence_logits(reference, prompt);
      const Tensor got = sequence_logits(model, prompt, -1, /*chunk=*/4);
      ASSERT_EQ(got.defined(), model.stage().last());
      if (model.stage().last()) {
        ASSERT_EQ(got.shape(), want.shape());
        EXPECT_LE(relative_max_diff(want, got), 1e-4f);
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
      req.sampling.top_k = 20;  // from each shard's 20 candidates
      req.sampling.repetition_penalty = 1.2f;
      EXPECT_EQ(many.generate(req).tokens, one.generate(req).tokens);
    }
}

// A model whose matrices are quantized in blocks of 32 that every TP rank's share of o_proj's
// and down_proj's input features holds whole (up to TP = 8): q4_1 matrices, float32 vectors.
ModelConfig quantized_config() {
  ModelConfig c = test_config(false);
  c.head_dim = 32;
  c.intermediate_size = 256;
  return c;
}

// Each rank reads only its hyperslabs: exactly its share of every tensor, counted from the
// canonical table independently of the loader (of a float32 file, and of a quantized one: its
// blocks as stored).
void check_bytes_read(const ModelConfig& c, DType matrices) {
  ReferenceModel ref(c, std::string("tessera_bytes_") + std::string(dtype_name(matrices)) + ".h5",
                     3, matrices);
  const int p = ref.world->size();
  for (int tp = 1; tp <= p; tp *= 2)
    for (int pp = 1; tp * pp <= p && pp <= 4; pp *= 2) {
      SCOPED_TRACE("tp " + std::to_string(tp) + " pp " + std::to_string(pp));
      ProcessGroups g = ProcessGroups::create({p / (tp * pp), pp, 1, tp}, MpiCommunicator::world());
      ModelReader reader(ref.path);  // a reader of its own: it counts the bytes it reads
      const LlamaModel model = LlamaModel::load(reader, g.tp.get(), g.pp.get());
      const LayerRange layers = stage_layers(c.num_layers, pp, g.coord.pp);
      const bool first = g.coord.pp == 0, last = g.coord.pp == pp - 1;
      const int64_t kv_share = tp <= c.num_kv_heads ? c.num_kv_heads / tp : 1;
      double expected = 0;  // bytes: 4 per vector element, the format's per matrix element
      const double matrix_bytes =
          double(dtype_block_bytes(matrices)) / double(dtype_block_elements(matrices));
      for (const TensorSpec& s : llama_tensor_specs(c)) {
        if (!s.required) continue;
        const std::string suffix = layer_suffix(s.name);
        const double per = s.shape.size() == 2 ? matrix_bytes : 4;
        if (suffix.empty()) {
          if (s.name == "embed_tokens.weight" && first)
            expected += per * double(s.shape[0] / tp * s.shape[1]);
          if (s.name == "lm_head.weight" && last)
            expected += per * double(s.shape[0] / tp * s.shape[1]);
          if (s.name == "norm.weight" && last) expected += 4 * double(s.shape[0]);
          continue;
        }
        const int64_t layer = std::stoll(s.name.substr(7));
        if (layer < layers.first || layer >= layers.last) continue;
        const int64_t numel = shape_numel(s.shape);
        if (suffix.find("layernorm") != std::string::npos)
          expected += per * double(numel);
        else if (suffix.find("k_proj") != std::string::npos ||
                 suffix.find("v_proj") != std::string::npos)
          expected += per * double(numel / c.num_kv_heads * kv_share);
        else
          expected += per * double(numel / tp);  // q, o, gate, up, down: a 1/tp slice
      }
      EXPECT_EQ(double(reader.bytes_read()), expected);
      EXPECT_EQ(model.weight_bytes(), int64_t(reader.bytes_read()))
          << "the rank holds exactly what it read (quantized blocks stay quantized)";
    }
}

TEST(ModelParallel, EachRankReadsOnlyItsShare) {
  check_bytes_read(test_config(false), DType::kF32);
}

TEST(ModelParallel, EachRankReadsOnlyItsShareOfAQuantizedFile) {
  check_bytes_read(quantized_config(), DType::kQ4_1);
}

// Quantized matrices under every tp x pp layout: each rank's activation blocks are the one-rank
// run's (shares start at block boundaries) and the integer sums per block the same; only the
// row-parallel partial sums add in another order. A last-bit difference there can move the next
// layer's int16 rounding of an activation by one step (1/65534 of its block's largest
// magnitude), so logits agree to 1e-3 x max|logit| (the float32 path: 1e-4), and greedy tokens
// are identical.
TEST(ModelParallel, QuantizedWeightsMatchOneRank) {
  ReferenceModel ref(quantized_config(), "tessera_tp_q4_1.h5", 5, DType::kQ4_1);
  const int p = ref.world->size();
  const std::vector<int32_t> prompt = {5, 77, 200, 3, 3, 150, 42, 9, 255, 17, 64};
  for (int tp = 1; tp <= p; tp *= 2)
    for (int pp = 1; tp * pp <= p && pp <= 4; pp *= 2) {
      if (tp * pp == 1) continue;
      SCOPED_TRACE("tp " + std::to_string(tp) + " pp " + std::to_string(pp));
      ProcessGroups g = ProcessGroups::create({p / (tp * pp), pp, 1, tp}, MpiCommunicator::world());
      const LlamaModel model = LlamaModel::load(ref.reader, g.tp.get(), g.pp.get());
      const Tensor want = sequence_logits(ref.model, prompt);
      const Tensor got = sequence_logits(model, prompt);
      if (model.stage().last()) {
        EXPECT_LE(relative_max_diff(want, got), 1e-3f);
      }
      GenerationRequest req;
      req.prompt = prompt;
      req.max_tokens = 16;
      req.ignore_eos = true;
      EXPECT_EQ(Generator(model, ref.tokenizer).generate(req).tokens,
                Generator(ref.model, ref.tokenizer).generate(req).tokens);
    }
}

// Sequence parallelism (alone and with TP and PP): the prompt is split over the SP group (ring
// attention), decode merges partial attention by log-sum-exp. The last prompt position's logits
// and the generated tokens equal the one-rank run; a prompt whose KV cache does not fit one
// rank's budget runs once it is spread over the group.
TEST(ModelParallel, SequenceParallelMatchesOneRank) {
  ReferenceModel ref = reference_model(false);
  const int p = ref.world->size();
  const ModelReader& reader = ref.reader;
  const Tokenizer& tok = ref.tokenizer;
  const LlamaModel& reference = ref.model;
  const std::vector<int32_t> prompt = {5, 77, 200, 3, 3, 150, 42, 9, 255, 17, 64, 1, 2};  // 13
  const Tensor all = sequence_logits(reference, prompt);
  const Tensor want = all.rows(all.dim(0) - 1, all.dim(0));
  for (int sp = 2; sp <= p; sp *= 2)
    for (int tp = 1; tp * sp <= p && tp <= 2; tp *= 2)
      for (int pp = 1; tp * sp * pp <= p && pp <= 2; pp *= 2) {
        SCOPED_TRACE("sp " + std::to_string(sp) + " tp " + std::to_string(tp) + " pp " +
                     std::to_string(pp));
        ProcessGroups g =
            ProcessGroups::create({p / (tp * sp * pp), pp, sp, tp}, MpiCommunicator::world());
        const LlamaModel model = LlamaModel::load(reader, g.tp.get(), g.pp.get(), g.sp.get());
        RunnerOptions o;
        o.num_blocks = 4;
        ModelRunner runner(model, o);
        SingleSequence sequence(runner);
        const Tensor mine = sequence.feed(prompt, 1);
        // Only its own tokens.
        EXPECT_EQ(sequence.rows_held(g.coord.sp), sp_prompt_chunk(13, sp, g.coord.sp).size());
        if (model.stage().last()) {
          EXPECT_LE(relative_max_diff(want, gather_vocab_shards(mine, model.tp())), 1e-4f);
        }

        GenerationRequest req;
        req.prompt = prompt;
        req.max_tokens = 20;
        req.ignore_eos = true;
        const auto greedy = Generator(reference, tok).generate(req).tokens;
        EXPECT_EQ(Generator(model, tok).generate(req).tokens, greedy);
        // A 40-token prompt with a KV budget per rank that one rank cannot serve but the SP
        // group can.
        GenerationRequest longer = req;
        for (int i = 0; i < 27; ++i) longer.prompt.push_back((i * 37 + 11) % 256);
        longer.max_tokens = 8;
        // Rows a rank holds for the 40-token prompt and 7 decode positions, in whole blocks of
        // 16 (the pools are paged).
        const int64_t rows = (40 + sp - 1) / sp + (7 + sp - 1) / sp;
        const int64_t budget = (rows + 15) / 16 * 16;
        ASSERT_LT(budget, 40);
        EXPECT_THROW(Generator(reference, tok, 0, budget).generate(longer), Error);
        EXPECT_EQ(Generator(model, tok, 0, budget).generate(longer).tokens,
                  Generator(reference, tok).generate(longer).tokens);
        req.sampling.temperature = 0.9f;
        req.sampling.top_k = 50;
        req.sampling.seed = 5;
        EXPECT_EQ(Generator(model, tok).generate(req).tokens,
                  Generator(reference, tok).generate(req).tokens);
      }
}

TEST(ModelParallel, WeightedStagesMatchOneRank) {
  ReferenceModel ref = reference_model(false);
  const int p = ref.world->size();
  const ModelReader& reader = ref.reader;
  const Tokenizer& tok = ref.tokenizer;
  const LlamaModel& reference = ref.model;
  ProcessGroups g = ProcessGroups::create({p / 2, 2, 1, 1}, MpiCommunicator::world());
  const LlamaModel model = LlamaModel::load(reader, g.tp.get(), g.pp.get(), nullptr,
                                            LoadOptions{{1.0, 4.0}, Device::cpu()});
  EXPECT_EQ(model.shard().layers.size(), g.coord.pp == 0 ? 1 : 4);  // 5 layers as 1 + 4
  GenerationRequest req;
  req.prompt = {5, 77, 200, 3};
  req.max_tokens = 10;
  req.ignore_eos = true;
  EXPECT_EQ(Generator(model, tok).generate(req).tokens,
            Generator(reference, tok).generate(req).tokens);
}

TEST(ModelParallel, LlamaGqaMatchesOneRank) {
  check_against_one_rank(false);
}
TEST(ModelParallel, Qwen2BiasTiedMatchesOneRank) {
  check_against_one_rank(true);
}

}  // namespace
}  // namespace tessera
