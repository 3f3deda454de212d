// The model on the GPU path against the one-rank CPU run of the same file, for one rank and for
// TP, PP and SP layouts whose ranks all share one GPU and talk over the MPI communicator (NCCL
// refuses two ranks on one device): logits agree to 1e-4 x max|logit| (float32 on both paths)
// and greedy and seeded tokens are identical. Where there is no GPU each rank runs the GPU path
// on an emulated one (host memory, the kernel sources on the CUDA emulator), so the GPU path's
// TP/PP/SP logic is tested in CI; where there is a GPU, every rank uses cuda:0.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"
#include "runtime/generator.h"
#include "runtime/llama_model.h"
#include "runtime/single_sequence.h"
#include "tests/mpi/random_model.h"

namespace tessera {
namespace {

#if TESSERA_HAVE_CUDA
ModelConfig gpu_test_config() {
  ModelConfig c;
  c.architecture = "llama";
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_layers = 4;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 8;  // smaller than a warp: lanes without an output dimension
  c.max_position_embeddings = 64;
  return c;
}

LoadOptions on_gpu() {
  LoadOptions o;
  o.device = test_gpu();
  return o;
}

void expect_same_run(const LlamaModel& reference, const LlamaModel& model, const Tokenizer& tok,
                     const std::vector<int32_t>& prompt, bool all_logits) {
  const Tensor all = sequence_logits(reference, prompt, -1);
  const Tensor want = all_logits ? all : all.rows(all.dim(0) - 1, all.dim(0));
  RunnerOptions o;
  o.num_blocks = 4;
  ModelRunner runner(model, o);
  EXPECT_EQ(runner.pool().keys(0).device(), test_gpu());
  const Tensor mine = SingleSequence(runner).feed(prompt, all_logits ? -1 : 1);
  ASSERT_EQ(mine.defined(), model.stage().last());
  if (model.stage().last()) {
    const Tensor got = gather_vocab_shards(mine, model.tp());
    EXPECT_TRUE(got.device().is_cpu());
    ASSERT_EQ(got.shape(), want.shape());
    EXPECT_LE(relative_max_diff(want, got), 1e-4f);
  }
  GenerationRequest req;
  req.prompt = prompt;
  req.max_tokens = 20;
  req.ignore_eos = true;
  EXPECT_EQ(Generator(model, tok).generate(req).tokens,
            Generator(reference, tok).generate(req).tokens);
  req.sampling.temperature = 0.9f;
  req.sampling.top_k = 40;
  req.sampling.seed = 3;
  EXPECT_EQ(Generator(model, tok).generate(req).tokens,
            Generator(reference, tok).generate(req).tokens);
}

TEST(GpuModel, EveryLayoutOnOneGpuMatchesTheOneRankCpuRun) {
  ReferenceModel ref(gpu_test_config(), "tessera_gpu_model.h5", 7);
  const int p = ref.world->size();
  const std::vector<int32_t> prompt = {5, 77, 200, 3, 3, 150, 42, 9, 255, 17, 64, 1, 2};
  {
    SCOPED_TRACE("one rank on the GPU");
    const std::unique_ptr<Communicator> local = make_local_communicator();
    const LlamaModel model =
        LlamaModel::load(ref.reader, local.get(), local.get(), nullptr, on_gpu());
    expect_same_run(ref.model, model, ref.tokenizer, prompt, true);
  }
  struct Layout {
    int tp, pp, sp;
  };
  for (const Layout l : {Layout{2, 1, 1}, Layout{1, 2, 1}, Layout{2, 2, 1}, Layout{1, 1, 2}}) {
    if (l.tp * l.pp * l.sp > p) continue;
    SCOPED_TRACE("tp " + std::to_string(l.tp) + " pp " + std::to_string(l.pp) + " sp " +
                 std::to_string(l.sp));
    ProcessGroups g = ProcessGroups::create({p / (l.tp * l.pp * l.sp), l.pp, l.sp, l.tp},
                                            MpiCommunicator::world());
    const LlamaModel model = LlamaModel::load(ref.reader, g.tp.get(), g.pp.get(),
                                              l.sp > 1 ? g.sp.get() : nullptr, on_gpu());
    expect_same_run(ref.model, model, ref.tokenizer, prompt, l.sp == 1);
  }
}
// A random model (LlamaModel::random) is one model whatever the device and layout: its TP shards
// are slices of the one-rank model's tensors, and the GPU makes the numbers the CPU makes.
TEST(GpuModel, RandomModelsAreOneModelOnEveryDeviceAndLayout) {
  const ModelConfig c = gpu_test_config();
  const std::unique_ptr<Communicator> local = make_local_communicator();
  const LlamaModel cpu = LlamaModel::random(c, 42, local.get(), local.get());
  const LlamaModel gpu = LlamaModel::random(c, 42, local.get(), local.get(), nullptr, on_gpu());
  const LlamaModel other_seed = LlamaModel::random(c, 43, local.get(), local.get());
  const std::vector<int32_t> prompt = {1, 2, 3, 200, 100};
  const Tensor want = sequence_logits(cpu, prompt);
  EXPECT_LE(relative_max_diff(want, sequence_logits(gpu, prompt)), 1e-5f);
  EXPECT_GT(relative_max_diff(want, sequence_logits(other_seed, prompt)), 0.1f);
  const int p = MpiCommunicator::world()->size();
  ProcessGroups g = ProcessGroups::create({p / 2, 1, 1, 2}, MpiCommunicator::world());
  const LlamaModel tp2 = LlamaModel::random(c, 42, g.tp.get(), g.pp.get(), nullptr, on_gpu());
  EXPECT_LE(relative_max_diff(want, sequence_logits(tp2, prompt)), 1e-4f);
}

// bf16 weights and activations (float32 accumulation, float32 attention states and KV cache)
// against the float32 CPU run: the logits drift by bf16 rounding, not more.
TEST(GpuModel, Bf16DriftsFromFloat32ByRoundingOnly) {
  ReferenceModel ref(gpu_test_config(), "tessera_gpu_bf16.h5", 7);
  const int p = ref.world->size();
  const std::vector<int32_t> prompt = {5, 77, 200, 3, 3, 150, 42, 9, 255, 17, 64, 1, 2};
  const Tensor want = sequence_logits(ref.model, prompt);
  struct Layout {
    int tp, pp;
  };
  for (const Layout l : {Layout{1, 1}, Layout{2, 1}, Layout{1, 2}}) {
    if (l.tp * l.pp > p) continue;
    SCOPED_TRACE("tp " + std::to_string(l.tp) + " pp " + std::to_string(l.pp));
    ProcessGroups g =
        ProcessGroups::create({p / (l.tp * l.pp), l.pp, 1, l.tp}, MpiCommunicator::world());
    LoadOptions o = on_gpu();
    o.dtype = DType::kBF16;
    const LlamaModel model = LlamaModel::load(ref.reader, g.tp.get(), g.pp.get(), nullptr, o);
    const Tensor got = sequence_logits(model, prompt);
    if (!model.stage().last()) continue;
    ASSERT_EQ(got.shape(), want.shape());
    const float drift = relative_max_diff(want, got);
    int same_top = 0;
    for (int64_t r = 0; r < want.dim(0); ++r) {
      const float* w = want.data<float>() + r * want.dim(1);
      const float* q = got.data<float>() + r * got.dim(1);
      same_top +=
          std::max_element(w, w + want.dim(1)) - w == std::max_element(q, q + got.dim(1)) - q;
    }
    if (ref.world->rank() == 0 || !model.stage().first())
      std::printf(
          "bf16 drift tp %d pp %d: %.4g of max|logit|, top-1 same at %d of %lld positions\n", l.tp,
          l.pp, drift, same_top, (long long)want.dim(0));
    EXPECT_GT(drift, 0.0f) << "bf16 changed nothing: the run was not in bf16";
    EXPECT_LE(drift, 0.05f);
    EXPECT_GE(same_top, want.dim(0) - 2);
  }
}
#else
TEST(GpuModel, Skipped) {
  GTEST_SKIP() << "this tessera was built without CUDA";
}
#endif

}  // namespace
}  // namespace tessera
