// tessera generate: one prompt streamed to stdout, or a JSONL batch of requests to a JSONL file.
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "launch/engine_report.h"
#include "launch/model_run.h"
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

void print_communication(const ProcessGroups& groups, double share) {
  if (groups.world->size() > 1)
    std::fprintf(stderr, "communication: %.1f%% of generation time (mean over %d ranks)\n",
                 100.0 * share, groups.world->size());
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
  std::string prompt, system, input, output;
  RequestDefaults d;
  std::vector<std::string> stop;
  ModelRunOptions run_options;
  run_options.add_to(desc);
  desc.add_options()
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
      ("ignore-eos", po::bool_switch(&d.ignore_eos), "keep generating past end-of-sequence tokens");
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
  ModelRun run = ModelRun::start(run_options, vm);
  ModelBundle& bundle = run.bundle;
  ProcessGroups& groups = run.groups;
  const bool rank0 = run.rank0;

  if (vm.count("input")) {
    Engine engine(*bundle.model, *bundle.tokenizer, run.engine);
    report_progress(engine, run_options.stats_interval);
    const BatchTotals t = run_batch(bundle, engine, d, input, output);
    const double wall = engine.stats().run_seconds;
    const double share = communication_share(groups, wall);
    if (rank0) {
      std::fprintf(stderr, "tessera: %lld requests, %lld errors, results in %s\n",
                   (long long)t.requests, (long long)t.errors, output.c_str());
      print_speed("prompt", t.prompt_tokens, wall);
      print_speed("generated", t.generated_tokens, wall);
      print_communication(groups, share);
    }
    report_engine(groups, engine.stats(), run_options.trace);
    return 0;
  }

  Generator gen(*bundle.model, *bundle.tokenizer, run.engine);
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
  if (rank0) {
    std::fputs("\n", stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "finish_reason: %s\n", r.finish_reason.c_str());
    print_speed("prefill", r.prompt_tokens, r.prefill_seconds);
    print_speed("decode", int64_t(r.tokens.size()), r.decode_seconds);
    print_communication(groups, share);
  }
  report_engine(groups, gen.stats(), run_options.trace);
  return 0;
}

}  // namespace tessera::cli
