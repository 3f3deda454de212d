#include "launch/model_run.h"

#include <cstdio>
#include <algorithm>
#include <cstdlib>

#include "io/model_store.h"
#include "parallel/mpi_communicator.h"
#include "runtime/draft_proposer.h"

namespace tessera::cli {
namespace {

std::vector<double> parse_weights(const std::string& text) {
  std::vector<double> weights;
  for (size_t at = 0; !text.empty() && at <= text.size();) {
    const size_t comma = std::min(text.find(',', at), text.size());
    try {
      weights.push_back(std::stod(text.substr(at, comma - at)));
    } catch (const std::exception&) {
      TESSERA_FAIL("--pp-weights '" << text << "' is not a list of numbers like 2,2,1,1");
    }
    at = comma + 1;
  }
  return weights;
}

// TESSERA_FAIL_AT=RANK:STEP makes that world rank throw when step STEP starts (for tests of a
// failure mid-step); 0 when unset or aimed at another rank.
int64_t injected_failure_step(int world_rank) {
  const char* v = std::getenv("TESSERA_FAIL_AT");
  if (!v || !*v) return 0;
  int rank = -1;
  long long step = 0;
  TESSERA_CHECK(std::sscanf(v, "%d:%lld", &rank, &step) == 2 && step > 0,
                "TESSERA_FAIL_AT='" << v << "' is not RANK:STEP");
  return rank == world_rank ? step : 0;
}

}  // namespace

void ModelRunOptions::add_to(po::options_description& desc) {
  // clang-format off
  desc.add_options()
      ("model,m", po::value(&model), "model file (.h5) made by tessera convert")
      ("random", po::value(&random),
       "instead of --model: random weights of a config's shape (configs/*.json) and a stand-in "
       "tokenizer, for benchmarks where the model file is not at hand")
      ("tp", po::value(&layout.tp)->default_value(1), "tensor-parallel ranks (shard every layer)")
      ("pp", po::value(&layout.pp)->default_value(1), "pipeline-parallel stages")
      ("sp", po::value(&layout.sp)->default_value(1), "sequence-parallel ranks")
      ("dp", po::value(&layout.dp)->default_value(1), "data-parallel replicas")
      ("pp-weights", po::value(&pp_weights),
       "relative layer shares of the stages, e.g. 2,2,1,1 (default: even)")
      ("microbatch", po::value(&engine.scheduler.prefill_chunk)->default_value(0),
       "tokens of a prompt per step with --pp (0: two chunks per stage, of 64 tokens at least; "
       ">= the prompt: one)")
      ("max-context", po::value(&max_context)->default_value(0),
       "cap the context window at this many tokens (0: the model's)")
      ("kv-cache-memory", po::value(&kv.memory)->default_value(kv.memory),
       "memory for each rank's KV cache: a size (2GiB), or a fraction of the node's available "
       "memory shared by its ranks (on a GPU: of its reservation's memory left after the "
       "weights); auto: 0.25 on the CPU, 0.9 on a GPU")
      ("kv-cache-tokens", po::value(&kv.tokens)->default_value(0),
       "tokens of KV cache each rank holds (instead of --kv-cache-memory)")
      ("block-size", po::value(&engine.scheduler.block_size)->default_value(16),
       "tokens per KV-cache block")
      ("kv-cache-dtype", po::value(&kv_dtype)->default_value(kv_dtype),
       "what the KV cache stores: f32 (exact), f16 (half the memory and the attention's "
       "reads; keys and values rounded to half precision), or fp8 (a quarter: float8 e4m3, "
       "over each layer's key and value scales where the checkpoint has them, else 1, as vLLM)")
      ("comm-dtype", po::value(&comm_dtype)->default_value(comm_dtype),
       "what crosses ranks (the tensor-parallel all-reduce's partial sums, the hidden states "
       "between pipeline stages): f32 (exact), bf16 (half the bytes), or q8 (blocks of 32: the "
       "largest value in bf16, the others int8 with a scale; 0.29 of the bytes; sums still "
       "taken in f32), for slow links")
      ("no-prefix-caching", po::bool_switch(), "compute every prompt in full, sharing no blocks")
      ("no-cuda-graphs", po::bool_switch(),
       "on a GPU, launch every kernel of a decode step instead of replaying a CUDA graph "
       "captured for its batch size")
      ("max-batch", po::value(&engine.scheduler.max_sequences)
                        ->default_value(engine.scheduler.max_sequences),
       "requests running at once (continuous batching)")
      ("max-step-tokens", po::value(&engine.scheduler.max_step_tokens)->default_value(2048),
       "tokens in one step; longer prompts are prefilled in chunks")
      ("speculative", po::value(&speculative)->default_value(speculative),
       "speculative decoding: ngram (prompt lookup: each decoding request's step also checks the "
       "tokens that followed the latest earlier occurrence of its last few tokens; pays where "
       "the output repeats the prompt: rewriting, editing given code), draft (a smaller model "
       "with the same tokenizer, --draft-model, proposes them) or off. Greedy and seeded "
       "output stays the same")
      ("num-speculative-tokens",
       po::value(&speculative_tokens)
           ->default_value(speculative_tokens, std::to_string(kNgramSpeculativeTokens) +
                                                   " with ngram, " +
                                                   std::to_string(kDraftSpeculativeTokens) +
                                                   " with draft"),
       "the most tokens proposed per request and step with --speculative (each request's count "
       "adapts to how many of its proposals were right). ngram's proposals cost nothing to make: "
       "its default checks 11 and the next token in a step of 12 rows (three of the CPU's "
       "4-row tiles on q8_0, q4_0, q4_1 and int4 weights); each of a draft's costs a draft step")
      ("draft-model", po::value(&draft_model),
       "with --speculative draft: the draft model's file (tessera convert; e.g. the target's own "
       "Q4_0 copy), run whole on each replica's leader; its KV cache takes a share of the "
       "cache memory")
      ("speculative-max-batch",
       po::value(&engine.scheduler.speculative_max_batch)->default_value(kSpeculativeMaxBatch),
       "no speculation in a step of more than this many decoding requests, where the extra rows "
       "cost about what they save (0: no limit)")
      ("max-in-flight", po::value(&engine.max_in_flight)->default_value(0),
       "steps in the pipeline at once, each with its own requests (0: one per stage)")
      ;
  // clang-format on
  device.add_to(desc);
  desc.add_options()
      ("trace", po::value(&trace), "write a timeline of every rank's steps (Chrome trace JSON)")
      ("stats-interval", po::value(&stats_interval)->default_value(stats_interval),
       "seconds between progress lines on stderr while requests run: running and waiting "
       "requests, KV blocks, prefix hits, preemptions, tokens/s (0: none)");
}

ModelRun ModelRun::start(ModelRunOptions& o, const po::variables_map& vm) {
  const SchedulerOptions& flags = o.engine.scheduler;  // (as given)
  TESSERA_CHECK(flags.prefill_chunk >= 0, "--microbatch must be >= 0");
  TESSERA_CHECK(flags.block_size >= 1, "--block-size must be at least 1");
  TESSERA_CHECK(
      o.kv_dtype == "f32" || o.kv_dtype == "f16" || o.kv_dtype == "fp8" || o.kv_dtype == "fp8_e4m3",
      "--kv-cache-dtype must be f32, f16 or fp8, got '" << o.kv_dtype << "'");
  o.engine.kv_dtype = o.kv_dtype.starts_with("fp8") ? DType::kE4M3 : dtype_from_name(o.kv_dtype);
  TESSERA_CHECK(flags.max_sequences >= 1, "--max-batch must be at least 1");
  TESSERA_CHECK(flags.max_step_tokens >= 1, "--max-step-tokens must be at least 1");
  TESSERA_CHECK(o.engine.max_in_flight >= 0, "--max-in-flight must be >= 0");
  TESSERA_CHECK(o.speculative == "ngram" || o.speculative == "draft" || o.speculative == "off",
                "--speculative must be ngram, draft or off, got '" << o.speculative << "'");
  if (vm["num-speculative-tokens"].defaulted())
    o.speculative_tokens =
        o.speculative == "ngram" ? kNgramSpeculativeTokens : kDraftSpeculativeTokens;
  TESSERA_CHECK(o.speculative_tokens >= 1,
                "--num-speculative-tokens must be at least 1, got " << o.speculative_tokens);
  TESSERA_CHECK((o.speculative == "draft") == !o.draft_model.empty(),
                (o.draft_model.empty() ? "--speculative draft needs --draft-model FILE"
                                       : "--draft-model is for --speculative draft"));
  TESSERA_CHECK(o.draft_model.empty() || !o.model.empty(),
                "--draft-model needs a target --model file (its tokenizer is compared)");
  TESSERA_CHECK(flags.speculative_max_batch >= 0, "--speculative-max-batch must be >= 0");
  o.engine.speculative_tokens = o.speculative != "off" ? o.speculative_tokens : 0;
  TESSERA_CHECK(o.stats_interval >= 0, "--stats-interval must be >= 0 seconds");
  TESSERA_CHECK(o.device.step_timeout > 0,
                "--step-timeout must be positive, got " << o.device.step_timeout);
  const std::vector<double> weights = parse_weights(o.pp_weights);
  LoadOptions load;
  load.stage_weights = weights;
  load.wire = wire_format_from_name(o.comm_dtype);
  load.device = start_device(o.device);  // before the groups: NCCL's are made on the GPU
  const GroupTransport transport = group_transport(o.device, load.device);
  ModelRun run{ProcessGroups::create(o.layout, MpiCommunicator::world(), transport), {}, o.engine,
               false, nullptr};
  run.rank0 = run.groups.world->rank() == 0;
  if (run.rank0 && !o.draft_model.empty())  // (a leader: refused before anything is loaded)
    check_draft_tokenizer(o.draft_model, ModelReader(o.draft_model).read_tokenizer(),
                          ModelReader(o.model).read_tokenizer());
  load.dtype = model_dtype(o.device, load.device);
  TESSERA_CHECK(o.model.empty() != o.random.empty(),
                "give --model FILE or --random CONFIG (one of them)");
  run.bundle = o.random.empty()
                   ? ModelBundle::load(o.model, run.groups, load)
                   : ModelBundle::random(load_model_config(o.random), o.random, run.groups, load);
  const LlamaModel& m = *run.bundle.model;
  if (run.rank0)
    std::fprintf(stderr,
                 "tessera: loaded %s on %d rank(s) (tp %d, pp %d, sp %d; %s) on %s, %s: rank 0 "
                 "holds layers %lld-%lld of %lld, %.1f MB of weights, in %.2f s\n",
                 run.bundle.path.c_str(), run.groups.world->size(), o.layout.tp, o.layout.pp,
                 o.layout.sp, describe_transport(transport).c_str(),
                 describe_device(load.device).c_str(), std::string(dtype_name(load.dtype)).c_str(),
                 (long long)m.shard().layers.first, (long long)m.shard().layers.last - 1,
                 (long long)m.config().num_layers, double(run.bundle.weight_bytes_read) / 1e6,
                 run.bundle.load_seconds);
  EngineOptions& e = run.engine;
  SchedulerOptions& sched = e.scheduler;
  e.max_context = o.max_context;
  sched.prefix_caching = !vm["no-prefix-caching"].as<bool>();
  const KvPoolShape shape = m.kv_shape(sched.block_size, e.kv_dtype);
  // The draft model, loaded before the cache is sized (its weights come out of the same memory),
  // on the leaders only: only they open its file (a draft of another tokenizer is refused there,
  // and the launcher stops every rank).
  const bool leader = m.stage().first() && m.shard().tp_rank == 0 && m.shard().sp_rank == 0;
  DraftModel draft;
  int64_t draft_weight_bytes = 0, draft_block_bytes = 0;
  if (!o.draft_model.empty() && leader) {
    draft = DraftModel::load(o.draft_model, ModelReader(o.model).read_tokenizer(), load);
    draft_weight_bytes = draft.model->weight_bytes();
    draft_block_bytes = draft.model->kv_shape(sched.block_size, e.kv_dtype).bytes_per_block();
  }
  sched.num_blocks = kv_cache_blocks(o.kv, shape, *run.groups.world);
  if (!o.draft_model.empty()) {
    // Every rank shrinks its cache alike, so that the leader's holds the draft's cache too: as
    // many tokens as the target's (the draft keeps rows of every running request). The draft's
    // bytes per block come from the leaders (the most over the world: the others have none), and
    // stages of different layer counts shrink by different shares: the least over the world.
    Tensor bytes = Tensor::from_i64({draft_block_bytes}, {1});
    run.groups.world->all_reduce(bytes, ReduceOp::kMax);
    const int64_t target = shape.bytes_per_block(), both = target + bytes.data<int64_t>()[0];
    Tensor least = Tensor::from_i64({sched.num_blocks * target / both}, {1});
    run.groups.world->all_reduce(least, ReduceOp::kMin);
    sched.num_blocks = least.data<int64_t>()[0];
    TESSERA_CHECK(sched.num_blocks >= 1,
                  "the KV cache has no room for the draft model's cache: give it more memory");
    if (leader)
      e.proposer = std::make_shared<DraftProposer>(
          std::move(draft), DraftOptions{sched.num_blocks, sched.block_size, e.kv_dtype});
  }
  e.fail_at_step = injected_failure_step(run.groups.world->rank());
  e.decode_graphs = !load.device.is_cpu() && !vm["no-cuda-graphs"].as<bool>();
  run.watchdog = std::make_shared<StepWatchdog>(o.device.step_timeout, o.on_stuck_step);
  if (run.rank0)
    std::fprintf(stderr,
                 "tessera: KV cache: %lld blocks of %lld tokens per rank (%lld tokens, %s, %.1f MB "
                 "on rank 0)%s\n",
                 (long long)sched.num_blocks, (long long)sched.block_size,
                 (long long)(sched.num_blocks * sched.block_size), o.kv_dtype.c_str(),
                 double(sched.num_blocks * shape.bytes_per_block()) / 1e6,
                 sched.prefix_caching ? ", prefix caching" : "");
  if (run.rank0 && !o.draft_model.empty())
    std::fprintf(stderr, "tessera: draft model %s on the leader of each replica, %.1f MB\n",
                 o.draft_model.c_str(), double(draft_weight_bytes) / 1e6);
  return run;
}

Communication communication_totals(ProcessGroups& groups, double seconds,
                                   const EngineStats& stats) {
  int64_t tokens = 0;  // that went through this rank's layers
  for (const EngineSpan& span : stats.spans) tokens += span.tokens;
  const double bytes = groups.model_communication_bytes();
  Tensor t = Tensor::from_f32({float(groups.model_communication_seconds()), float(seconds),
                               float(tokens > 0 ? bytes / double(tokens) : 0.0)},
                              {3});
  // (at the end of a run: a replica that finished first waits here for the others)
  const OperationWatch::NotAStep end_of_run;
  groups.world->all_reduce(t, ReduceOp::kSum);
  Communication c;
  c.share = t.data<float>()[1] > 0 ? t.data<float>()[0] / t.data<float>()[1] : 0.0;
  c.bytes_per_token = t.data<float>()[2] / float(groups.world->size());
  return c;
}

void print_communication(const ProcessGroups& groups, const Communication& c, WireFormat wire) {
  if (groups.world->size() > 1)
    std::fprintf(stderr,
                 "communication: %.1f%% of generation time (mean over %d ranks); %.2f KB sent per "
                 "token per rank (--comm-dtype %s)\n",
                 100.0 * c.share, groups.world->size(), c.bytes_per_token / 1e3,
                 std::string(wire_format_name(wire)).c_str());
}

void print_speed(const char* what, int64_t tokens, double seconds) {
  std::fprintf(stderr, "%s: %lld tokens in %.3f s (%.1f tokens/s)\n", what, (long long)tokens,
               seconds, seconds > 0 ? double(tokens) / seconds : 0.0);
}

}  // namespace tessera::cli
