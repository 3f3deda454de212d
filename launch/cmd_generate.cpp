// tessera generate: one prompt streamed to stdout, or a JSONL batch of requests to a JSONL file.
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "launch/engine_report.h"
#include "launch/kv_budget.h"
#include "launch/options.h"
#include "parallel/mpi_communicator.h"
#include "runtime/model_bundle.h"
#include "runtime/engine.h"
#include "runtime/request.h"

namespace tessera::cli {
namespace {

using nlohmann::json;

struct BatchTotals {
  int64_t requests = 0, errors = 0, prompt_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

void print_speed(const char* what, int64_t tokens, double seconds) {
  std::fprintf(stderr, "%s: %lld tokens in %.3f s (%.1f tokens/s)\n", what, (long long)tokens,
               seconds, seconds > 0 ? double(tokens) / seconds : 0.0);
}

// The share of generation time the ranks spent inside the model's communicators (TP, SP, PP),
// averaged over all ranks. Collective: every rank calls it.
double communication_share(ProcessGroups& groups, double generation_seconds) {
  Tensor t = Tensor::from_f32({float(groups.model_communication_seconds()),
                               float(generation_seconds)}, {2});
  groups.world->all_reduce(t, ReduceOp::kSum);
  return t.data<float>()[1] > 0 ? t.data<float>()[0] / t.data<float>()[1] : 0.0;
}

void print_communication(const ProcessGroups& groups, double share) {
  if (groups.world->size() > 1)
    std::fprintf(stderr, "communication: %.1f%% of generation time (mean over %d ranks)\n",
                 100.0 * share, groups.world->size());
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

json result_record(const std::string& id, const GenerationResult& r) {
  return json{{"id", id},
              {"text", r.text},
              {"token_ids", r.tokens},
              {"prompt_tokens", r.prompt_tokens},
              {"completion_tokens", int64_t(r.tokens.size())},
              {"finish_reason", r.finish_reason}};
}

json error_record(const std::string& id, int64_t line, const std::string& message) {
  return json{{"id", id}, {"error", {{"message", message}, {"line", line}}}};
}

// The leader reads the requests line by line as the engine has room for them, and writes one
// result or error record per non-blank line, in input order: a record goes out (flushed) as soon
// as every line before it has been written, so a crash loses nothing already written. The other
// ranks only follow the step plans.
BatchTotals run_batch(ModelBundle& bundle, Engine& engine, const RequestDefaults& defaults,
                      const std::string& input, const std::string& output) {
  BatchTotals totals;
  std::ifstream in;
  std::ofstream out;
  std::map<int64_t, std::string> ready;  // records by input slot, waiting for earlier ones
  int64_t slots = 0, written = 0, line_no = 0;
  auto write_ready = [&] {
    for (auto it = ready.find(written); it != ready.end(); it = ready.find(written)) {
      out << it->second << "\n";
      ready.erase(it);
      ++written;
    }
    out.flush();
    TESSERA_CHECK_IO(out, output << ": write failed");
  };
  auto dump = [](const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); };
  if (engine.leader()) {
    in.open(input);
    TESSERA_CHECK(in, input << ": cannot open the input file");
    out.open(output, std::ios::trunc);
    TESSERA_CHECK(out, output << ": cannot open the output file for writing");
    // Submits the next request (error records for bad lines on the way); false at the end.
    engine.set_feeder([&]() -> bool {
      std::string line;
      while (std::getline(in, line)) {
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        ++totals.requests;
        const int64_t slot = slots++;
        std::string id = "line-" + std::to_string(line_no);
        try {
          json body;
          try {
            body = json::parse(line);
          } catch (const json::parse_error& e) {
            TESSERA_FAIL("malformed JSON: " << e.what());
          }
          id = request_id(body, id);
          ParsedRequest req = parse_request(body, id, defaults, *bundle.tokenizer);
          engine.submit(req.generation, {}, [&, slot, rid = req.id](int64_t, const GenerationResult& r) {
            ready[slot] = dump(result_record(rid, r));
            totals.prompt_tokens += r.prompt_tokens;
            totals.generated_tokens += int64_t(r.tokens.size());
            totals.prefill_seconds += r.prefill_seconds;
            totals.decode_seconds += r.decode_seconds;
            write_ready();
          });
          return true;
        } catch (const Error& e) {
          if (e.kind() != ErrorKind::kInvalidInput) throw;  // a tessera bug stops the job
          ++totals.errors;
          ready[slot] = dump(error_record(id, line_no, e.what()));
          std::fprintf(stderr, "tessera: request %s (line %lld): %s\n", id.c_str(),
                       (long long)line_no, e.what());
          write_ready();
        }
      }
      return false;
    });
  }
  engine.run();
  if (engine.leader()) TESSERA_ASSERT(ready.empty() && written == slots, "records left unwritten");
  return totals;
}

}  // namespace

int run_generate(const Args& args) {
  po::options_description desc("Options");
  std::string model, prompt, system, input, output;
  RequestDefaults d;
  int64_t max_context = 0;
  GridShape layout;
  KvBudget kv_budget;
  std::string pp_weights;
  int64_t microbatch = 0;
  std::vector<std::string> stop;
  EngineOptions engine_options;
  std::string trace;
  desc.add_options()
      ("model,m", po::value(&model)->required(), "model file (.h5) made by tessera convert")
      ("prompt,p", po::value(&prompt), "generate from this text and stream the answer to stdout")
      ("chat", po::bool_switch(), "treat --prompt as a user message and apply the chat template")
      ("system", po::value(&system), "system message for --chat")
      ("input,i", po::value(&input), "JSONL file: one request per line ({\"id\", \"prompt\" or "
                                     "\"messages\", optional max_tokens, temperature, top_p, "
                                     "top_k, min_p, seed, stop})")
      ("output,o", po::value(&output), "JSONL file for the results (with --input)")
      ("max-tokens,n", po::value(&d.max_tokens)->default_value(256), "tokens to generate at most")
      ("temperature,t", po::value(&d.sampling.temperature)->default_value(0.0f, "0"),
       "sampling temperature; 0 is greedy")
      ("top-k", po::value(&d.sampling.top_k)->default_value(0), "keep the k likeliest tokens (0: off)")
      ("top-p", po::value(&d.sampling.top_p)->default_value(1.0f, "1"), "nucleus sampling mass (1: off)")
      ("min-p", po::value(&d.sampling.min_p)->default_value(0.0f, "0"),
       "drop tokens below min-p x the top probability (0: off)")
      ("repetition-penalty", po::value(&d.sampling.repetition_penalty)->default_value(1.0f, "1"),
       "penalise tokens already seen (1: off)")
      ("seed", po::value(&d.sampling.seed)->default_value(0), "random seed: the same seed gives the same output")
      ("stop", po::value(&stop)->composing(), "stop string (repeatable)")
      ("ignore-eos", po::bool_switch(&d.ignore_eos), "keep generating past end-of-sequence tokens")
      ("max-context", po::value(&max_context)->default_value(0),
       "cap the context window (KV cache) at this many tokens (0: the model's)")
      ("kv-cache-memory", po::value(&kv_budget.memory)->default_value(kv_budget.memory),
       "memory for each rank's KV cache: a size (2GiB) or a fraction of the node's available "
       "memory, shared by its ranks")
      ("kv-cache-tokens", po::value(&kv_budget.tokens)->default_value(0),
       "tokens of KV cache each rank holds (instead of --kv-cache-memory)")
      ("block-size", po::value(&engine_options.block_size)->default_value(16),
       "tokens per KV-cache block")
      ("no-prefix-caching", po::bool_switch(), "compute every prompt in full, sharing no blocks")
      ("tp", po::value(&layout.tp)->default_value(1), "tensor-parallel ranks (shard every layer)")
      ("pp", po::value(&layout.pp)->default_value(1), "pipeline-parallel stages")
      ("microbatch", po::value(&microbatch)->default_value(0),
       "tokens per prefill microbatch with --pp (0: two per stage; >= the prompt: off)")
      ("max-batch", po::value(&engine_options.max_sequences)->default_value(64),
       "requests running at once (continuous batching)")
      ("max-step-tokens", po::value(&engine_options.max_step_tokens)->default_value(2048),
       "tokens in one step; longer prompts are prefilled in chunks")
      ("max-in-flight", po::value(&engine_options.max_in_flight)->default_value(0),
       "steps in the pipeline at once, each with its own requests (0: one per stage)")
      ("trace", po::value(&trace), "write a timeline of every rank's steps (Chrome trace JSON)")
      ("pp-weights", po::value(&pp_weights),
       "relative layer shares of the stages, e.g. 2,2,1,1 (default: even)")
      ("sp", po::value(&layout.sp)->default_value(1), "sequence-parallel ranks")
      ("dp", po::value(&layout.dp)->default_value(1), "data-parallel replicas");
  po::variables_map vm;
  if (!parse_options("generate", "--model FILE (--prompt TEXT | --input IN.jsonl --output OUT.jsonl) [options]",
                     desc, args, vm))
    return 0;
  d.stop = stop;
  d.sampling.validate();
  TESSERA_CHECK(vm.count("prompt") != vm.count("input"),
                "give either --prompt or --input (see tessera generate --help)");
  TESSERA_CHECK(!vm.count("input") || vm.count("output"), "--input needs --output");
  if (vm.count("input")) {
    std::error_code ec;
    TESSERA_CHECK(!std::filesystem::equivalent(input, output, ec),
                  "--output " << output << " is the input file: it would be overwritten");
  }
  TESSERA_CHECK(d.max_tokens >= 1, "--max-tokens must be at least 1, got " << d.max_tokens);
  for (const auto& s : d.stop) TESSERA_CHECK(!s.empty(), "--stop needs a non-empty string");
  ProcessGroups groups = ProcessGroups::create(layout, MpiCommunicator::world());
  const bool rank0 = groups.world->rank() == 0;
  std::vector<double> weights;
  for (size_t at = 0; !pp_weights.empty() && at <= pp_weights.size();) {
    const size_t comma = std::min(pp_weights.find(',', at), pp_weights.size());
    try {
      weights.push_back(std::stod(pp_weights.substr(at, comma - at)));
    } catch (const std::exception&) {
      TESSERA_FAIL("--pp-weights '" << pp_weights << "' is not a list of numbers like 2,2,1,1");
    }
    at = comma + 1;
  }
  ModelBundle bundle = ModelBundle::load(model, groups, weights);
  if (rank0)
    std::fprintf(stderr,
                 "tessera: loaded %s on %d rank(s) (tp %d, pp %d, sp %d): rank 0 holds layers "
                 "%lld-%lld of %lld, %.1f MB of weights, in %.2f s\n",
                 model.c_str(), groups.world->size(), layout.tp, layout.pp, layout.sp,
                 (long long)bundle.model->shard().layers.first,
                 (long long)bundle.model->shard().layers.last - 1,
                 (long long)bundle.model->config().num_layers,
                 double(bundle.weight_bytes_read) / 1e6, bundle.load_seconds);
  TESSERA_CHECK(microbatch >= 0, "--microbatch must be >= 0");
  engine_options.max_context = max_context;
  TESSERA_CHECK(engine_options.block_size >= 1, "--block-size must be at least 1");
  engine_options.prefix_caching = !vm["no-prefix-caching"].as<bool>();
  engine_options.num_blocks =
      kv_cache_blocks(kv_budget, bundle.model->kv_shape(engine_options.block_size), *groups.world);
  if (rank0) {
    const int64_t bytes = engine_options.num_blocks *
                          bundle.model->kv_shape(engine_options.block_size).bytes_per_block();
    std::fprintf(stderr, "tessera: KV cache: %lld blocks of %lld tokens per rank (%.1f MB on rank 0)\n",
                 (long long)engine_options.num_blocks, (long long)engine_options.block_size,
                 double(bytes) / 1e6);
  }
  engine_options.prefill_chunk = microbatch;
  engine_options.fail_at_step = injected_failure_step(groups.world->rank());

  if (vm.count("input")) {
    Engine engine(*bundle.model, *bundle.tokenizer, engine_options);
    const BatchTotals t = run_batch(bundle, engine, d, input, output);
    const double wall = engine.stats().run_seconds;
    const double share = communication_share(groups, wall);
    if (rank0) {
      std::fprintf(stderr, "tessera: %lld requests, %lld errors, results in %s\n",
                   (long long)t.requests, (long long)t.errors, output.c_str());
      print_speed("prompt", t.prompt_tokens, wall);
      print_speed("generated", t.generated_tokens, wall);
      const int64_t done = t.requests - t.errors;
      if (done > 0)
        std::fprintf(stderr, "mean time to first token %.3f s, mean decode %.3f s per request\n",
                     t.prefill_seconds / double(done), t.decode_seconds / double(done));
      print_communication(groups, share);
    }
    report_engine(groups, engine.stats(), trace);
    return 0;
  }

  Generator gen(*bundle.model, *bundle.tokenizer, engine_options);
  json body = {{"max_tokens", d.max_tokens}};
  if (vm["chat"].as<bool>()) {
    json messages = json::array();
    if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
    messages.push_back({{"role", "user"}, {"content", prompt}});
    body["messages"] = messages;
  } else {
    body["prompt"] = prompt;
  }
  ParsedRequest req = parse_request(body, "prompt", d, *bundle.tokenizer);
  std::function<void(const std::string&)> print = [](const std::string& piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  };
  if (!rank0) print = nullptr;  // one rank writes
  GenerationResult r = gen.generate(req.generation, print);
  const double share = communication_share(groups, r.prefill_seconds + r.decode_seconds);
  report_engine(groups, gen.stats(), trace);
  if (!rank0) return 0;
  std::fputs("\n", stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "finish_reason: %s\n", r.finish_reason.c_str());
  print_speed("prefill", r.prompt_tokens, r.prefill_seconds);
  print_speed("decode", int64_t(r.tokens.size()), r.decode_seconds);
  print_communication(groups, share);
  return 0;
}

}  // namespace tessera::cli
