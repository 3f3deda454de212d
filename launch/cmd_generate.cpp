// tessera generate: one prompt streamed to stdout, or a JSONL batch of requests to a JSONL file.
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "io/result_log.h"
#include "launch/engine_report.h"
#include "launch/model_run.h"
#include "launch/options.h"
#include "parallel/mpi_communicator.h"
#include "runtime/engine.h"
#include "runtime/model_bundle.h"
#include "runtime/request.h"

#include <unistd.h>

namespace tessera::cli {
namespace {

using nlohmann::json;

struct BatchTotals {
  int64_t requests = 0, errors = 0, resumed = 0, prompt_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

json result_record(const std::string& id, const GenerationResult& r) {
  return json{{"id", id},
              {"text", r.text},
              {"token_ids", r.tokens},
              {"prompt_tokens", r.prompt_tokens},
              {"completion_tokens", int64_t(r.tokens.size())},
              {"finish_reason", r.finish_reason}};
}

json error_record(const std::string& id, int64_t line, const std::string& message,
                  const std::string& reason = "") {
  json e = {{"message", message}, {"line", line}};
  if (!reason.empty()) e["reason"] = reason;
  return json{{"id", id}, {"error", e}};
}

// Non-blank lines of a JSONL file (for the progress line's total).
int64_t count_requests(const std::string& path) {
  std::ifstream in(path);
  TESSERA_CHECK(in, path << ": cannot open the input file");
  int64_t n = 0;
  for (std::string line; std::getline(in, line);)
    n += line.find_first_not_of(" \t\r") != std::string::npos;
  return n;
}

// Where the replicas' records go. World rank 0, the leader of replica 0, is the one writer: it
// appends its own records and those the other replicas' leaders send it to the results file.
// A private copy of the world communicator carries them (collective to make: every rank).
class RecordChannel {
 public:
  RecordChannel(ResultLog* log, bool leader)
      : log_(log), leader_(leader), comm_(MpiCommunicator::world()->split(0, 0)) {
    comm_->set_name("batch records");
    // The keys of the records already written, from the writer to every rank (the leaders use
    // them).
    std::string keys;
    if (writer())
      for (const std::string& k : log_->done()) keys += k + '\n';
    comm_->broadcast_bytes(keys, 0);
    for (size_t at = 0; at < keys.size();) {
      const size_t end = keys.find('\n', at);
      done_.insert(keys.substr(at, end - at));
      at = end + 1;
    }
    Tensor leaders = Tensor::from_i32({leader_ ? 1 : 0}, {1});
    comm_->all_reduce(leaders, ReduceOp::kSum);
    senders_ = leaders.data<int32_t>()[0] - 1;
  }

  const std::set<std::string>& done() const { return done_; }
  bool writer() const { return comm_->rank() == 0; }
  int64_t appended() const { return appended_; }

  void put(const std::string& record) {
    if (writer()) {
      log_->append(record);
      ++appended_;
    } else {
      comm_->send_bytes(record, 0, kRecord);
    }
  }
  // The writer: appends every record that has arrived.
  void poll() {
    if (!writer()) return;
    while (const std::optional<MpiCommunicator::Arrival> a = comm_->arrived(kRecord)) {
      std::string record;
      comm_->recv_bytes(record, a->source, kRecord);
      put(record);
    }
  }
  // Every leader at the end: the others send their totals; the writer takes the remaining
  // records and every leader's totals, and adds them to `totals`.
  void finish(BatchTotals& totals) {
    if (!leader_) return;
    if (!writer()) {
      comm_->send_bytes(json{totals.requests, totals.errors, totals.resumed, totals.prompt_tokens,
                             totals.generated_tokens}
                            .dump(),
                        0, kDone);
      return;
    }
    // Any tag: a replica's records come before its totals (MPI keeps one sender's order).
    for (int left = senders_; left > 0;) {
      const std::optional<MpiCommunicator::Arrival> a = comm_->arrived(MpiCommunicator::kAnyTag);
      if (!a) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      std::string bytes;
      comm_->recv_bytes(bytes, a->source, a->tag);
      if (a->tag == kRecord) {
        put(bytes);
        continue;
      }
      const json t = json::parse(bytes);
      totals.requests += t[0].get<int64_t>();
      totals.errors += t[1].get<int64_t>();
      totals.resumed += t[2].get<int64_t>();
      totals.prompt_tokens += t[3].get<int64_t>();
      totals.generated_tokens += t[4].get<int64_t>();
      --left;
    }
  }

 private:
  static constexpr int kRecord = 1, kDone = 2;
  ResultLog* log_;
  bool leader_;
  std::unique_ptr<MpiCommunicator> comm_;  // private: its tags meet no one else's
  int senders_ = 0;
  int64_t appended_ = 0;
  std::set<std::string> done_;
};

// The request lines of a batch: a file, read as the engine has room; or standard input, read by a
// thread of its own, so that the engine never waits on it (a producer may wait for some records
// before it writes more requests).
class RequestLines {
 public:
  enum class Got { kLine, kNone, kEnd };  // a line; none yet (standard input); no more
  explicit RequestLines(const std::string& path) {
    if (path != "-") {
      file_.open(path);
      TESSERA_CHECK(file_, path << ": cannot open the input file");
      return;
    }
    auto shared = std::make_shared<Queue>();
    queue_ = shared;
    std::thread([shared] {  // (detached: it may sit in a read when the job ends)
      for (std::string line; std::getline(std::cin, line);) {
        std::lock_guard<std::mutex> lock(shared->mutex);
        shared->lines.push_back(std::move(line));
        shared->ready.notify_all();
      }
      std::lock_guard<std::mutex> lock(shared->mutex);
      shared->ended = true;
      shared->ready.notify_all();
    })
        .detach();
  }
  bool streaming() const { return queue_ != nullptr; }
  Got next(std::string& line) {
    if (!queue_) return std::getline(file_, line) ? Got::kLine : Got::kEnd;
    std::lock_guard<std::mutex> lock(queue_->mutex);
    if (queue_->lines.empty()) return queue_->ended ? Got::kEnd : Got::kNone;
    line = std::move(queue_->lines.front());
    queue_->lines.pop_front();
    return Got::kLine;
  }
  // Until a line or the end arrives, `seconds` at most.
  void wait(double seconds) {
    if (!queue_) return;
    std::unique_lock<std::mutex> lock(queue_->mutex);
    queue_->ready.wait_for(lock, std::chrono::duration<double>(seconds),
                           [&] { return queue_->ended || !queue_->lines.empty(); });
  }

 private:
  struct Queue {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<std::string> lines;
    bool ended = false;
  };
  std::ifstream file_;
  std::shared_ptr<Queue> queue_;  // standard input's
};

struct BatchOptions {
  std::string input, output;
  bool overwrite = false;             // start afresh instead of resuming
  double progress_interval = 10;      // seconds between progress lines (0: none)
  int64_t shard = 0, shards = 1;      // run only the requests whose index % shards == shard
  int64_t replica = 0, replicas = 1;  // of those, every replicas-th from the replica-th
};

// Each replica's leader reads the requests line by line as its engine has room for them, runs
// its share (every replicas-th), and puts one record per request as it finishes (a result, or an
// error record for a line that cannot run); the one writer appends them to the output, each
// synced to the disk (io/result_log.h). A resumed job skips the lines whose records the output
// already holds. The other ranks only follow the step plans.
BatchTotals run_batch(ModelBundle& bundle, Engine& engine, const RequestDefaults& defaults,
                      const BatchOptions& o, ResultLog* log) {
  BatchTotals totals;
  RecordChannel channel(log, engine.leader());
  std::unique_ptr<RequestLines> lines;
  std::map<std::string, int64_t> first_line;                  // id -> the line that used it first
  int64_t line_no = 0, total = -1, finished = 0, index = -1;  // total -1: unknown (a stream)
  bool fed_all = false;
  if (engine.leader()) {
    if (o.input != "-")
      total = (count_requests(o.input) + o.shards - 1 - o.shard) / o.shards;  // this shard's
    lines = std::make_unique<RequestLines>(o.input);
    TESSERA_ASSERT(!channel.writer() || log, "the writer writes the results");
    if (channel.writer() && (log->records_read() > 0 || log->dropped_partial_line()))
      std::fprintf(stderr, "tessera: resuming %s: %lld records there%s; the other requests run\n",
                   o.output.c_str(), (long long)log->records_read(),
                   log->dropped_partial_line() ? " (a partial last line was dropped)" : "");
    auto write_error = [&](const std::string& key, const json& record, const std::string& id,
                           const std::string& message) {
      ++finished;
      if (channel.done().count(key)) return;
      ++totals.errors;
      channel.put(json_text(record));
      std::fprintf(stderr, "tessera: request %s (line %lld): %s\n", id.c_str(), (long long)line_no,
                   message.c_str());
    };
    // Submits the next request (error records for bad lines on the way); false at the end.
    engine.set_feeder([&]() -> bool {
      std::string line;
      RequestLines::Got got;
      while ((got = lines->next(line)) == RequestLines::Got::kLine) {
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        // Every shard reads every line (to know the ids of all), and runs its own.
        ++index;
        const bool mine =
            index % o.shards == o.shard && (index / o.shards) % o.replicas == o.replica;
        totals.requests += mine;
        std::string id = "line-" + std::to_string(line_no);
        json body;
        try {
          body = parse_request_json(line);
        } catch (const Error& e) {
          if (mine) write_error(id, error_record(id, line_no, e.what()), id, e.what());
          continue;
        }
        id = request_id(body, id);
        if (auto [it, fresh] = first_line.emplace(id, line_no); !fresh) {
          if (!mine) continue;
          const std::string why =
              "the id '" + id + "' was used by line " + std::to_string(it->second) + " already";
          write_error(record_key(id, true, line_no), error_record(id, line_no, why, "duplicate_id"),
                      id, why);
          continue;
        }
        if (!mine) continue;
        if (channel.done().count(id)) {  // written by an earlier run
          ++totals.resumed;
          ++finished;
          continue;
        }
        try {
          ParsedRequest req = parse_request(body, id, defaults, *bundle.tokenizer);
          engine.submit(req.generation, {}, [&, rid = req.id](int64_t, const GenerationResult& r) {
            channel.put(json_text(result_record(rid, r)));
            ++finished;
            totals.prompt_tokens += r.prompt_tokens;
            totals.generated_tokens += int64_t(r.tokens.size());
            totals.prefill_seconds += r.prefill_seconds;
            totals.decode_seconds += r.decode_seconds;
          });
          return true;
        } catch (const Error& e) {
          if (e.kind() != ErrorKind::kInvalidInput) throw;  // a tessera bug stops the job
          write_error(id, error_record(id, line_no, e.what()), id, e.what());
        }
      }
      if (got == RequestLines::Got::kNone) return true;  // (more may come)
      fed_all = true;
      return false;
    });
    // Between steps: the writer takes the other replicas' records; an engine with nothing to
    // do waits a little for standard input instead of spinning.
    if ((channel.writer() && o.replicas > 1) || lines->streaming())
      engine.set_service([&](bool idle) {
        if (channel.writer() && o.replicas > 1) channel.poll();
        if (idle && !fed_all) lines->wait(0.05);
        return !(idle && fed_all);
      });
    // Progress: done/total, generated tokens/s, ETA; in place on a terminal, else plain lines.
    const bool tty = isatty(fileno(stderr));
    if (channel.writer())
      engine.set_progress(o.progress_interval, [&, tty](double elapsed, const SchedulerMetrics& m,
                                                        const EngineStats& s) {
        const double rate = elapsed > 0 ? double(s.sampled_tokens) / elapsed : 0;
        // (the writer sees every replica's records; the other leaders print nothing)
        const int64_t all_finished =
            channel.writer() ? log->records_read() + channel.appended() : finished;
        const int64_t done_now = all_finished - log->records_read();
        const double per_request = done_now > 0 ? elapsed / double(done_now) : 0;
        const double eta = per_request * double(std::max<int64_t>(0, total - all_finished));
        const std::string of = total >= 0 ? "/" + std::to_string(total) : "";
        const std::string left = total < 0      ? ""
                                 : done_now > 0 ? ", ETA " + std::to_string(int64_t(eta)) + " s"
                                                : ", ETA unknown";
        std::fprintf(stderr,
                     "%stessera: %lld%s requests done (%lld running, %lld waiting), %.1f "
                     "generated tokens/s, %.0f s elapsed%s%s",
                     tty ? "\r\033[K" : "", (long long)all_finished, of.c_str(),
                     (long long)m.running, (long long)m.waiting, rate, elapsed, left.c_str(),
                     tty ? "" : "\n");
        std::fflush(stderr);
      });
  }
  engine.run();
  channel.finish(totals);  // the writer: until every replica's records are in
  if (engine.leader() && isatty(fileno(stderr)) && o.progress_interval > 0)
    std::fputs("\n", stderr);
  return totals;
}

}  // namespace

int run_generate(const Args& args) {
  po::options_description desc("Options");
  std::string prompt, system, input, output;
  bool overwrite = false, fail_on_error = false;
  std::string shard;
  RequestDefaults d;
  std::vector<std::string> stop;
  ModelRunOptions run_options;
  run_options.add_to(desc);
  // clang-format off
  desc.add_options()
      ("prompt,p", po::value(&prompt), "generate from this text and stream the answer to stdout")
      ("chat", po::bool_switch(), "treat --prompt as a user message and apply the chat template")
      ("system", po::value(&system), "system message for --chat")
      ("input,i", po::value(&input), "JSONL file: one request per line ({\"id\", \"prompt\" or "
                                     "\"messages\", optional max_tokens, temperature, top_p, "
                                     "top_k, min_p, seed, stop}); - reads standard input")
      ("output,o", po::value(&output), "JSONL file for the results (with --input), appended as "
                                       "requests finish; a job run again resumes it. - (or "
                                       "any path that is not a regular file, such as a pipe) "
                                       "streams the records as they finish, with no resume")
      ("overwrite", po::bool_switch(&overwrite), "start --output afresh instead of resuming it")
      ("resume", po::bool_switch(), "resume --output (the default): only requests without a "
                                    "record there run")
      ("shard", po::value(&shard),
       "K/N: run only every N-th request from the K-th (0-based), as one task of an array job "
       "(slurm/generate_array.sbatch); the parts merge with slurm/merge_results.py")
      ("fail-on-error", po::bool_switch(&fail_on_error),
       "exit with 3 when a request got an error record")
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
  // clang-format on
  po::variables_map vm;
  if (!parse_options("generate",
                     "--model FILE (--prompt TEXT | --input IN.jsonl --output OUT.jsonl) [options]",
                     desc, args, vm))
    return 0;
  d.stop = stop;
  long long shard_k = 0, shard_n = 1;
  if (!shard.empty()) {
    char end = 0;
    TESSERA_CHECK(std::sscanf(shard.c_str(), "%lld/%lld%c", &shard_k, &shard_n, &end) == 2 &&
                      shard_n >= 1 && shard_k >= 0 && shard_k < shard_n,
                  "--shard must be K/N with 0 <= K < N, got '" << shard << "'");
  }
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
  TESSERA_CHECK(vm.count("input") || run_options.layout.dp == 1,
                "--dp splits the requests of a batch (--input) between replicas; a single "
                "--prompt runs on one (--dp 1)");
  // The results file is checked (and a partial last line dropped) before any model is loaded.
  std::unique_ptr<ResultLog> log;
  const int world_rank = MpiCommunicator::world()->rank();
  const bool stream = vm.count("input") && ResultLog::is_stream(output);
  const std::string output_name = output == "-" ? "standard output" : output;
  if (vm.count("input")) {
    TESSERA_CHECK(!(overwrite && vm["resume"].as<bool>()),
                  "give --overwrite or --resume, not both");
    TESSERA_CHECK(!(stream && vm["resume"].as<bool>()),
                  "--resume: " << output_name << " is a stream, which cannot be read back");
    TESSERA_CHECK(input != "-" || run_options.layout.dp == 1,
                  "--input - (standard input) reaches world rank 0 only: run one replica (--dp 1)");
    if (world_rank == 0 && stream) {
      // (said first: opening a named pipe waits for its reader)
      std::fprintf(stderr,
                   "tessera: the records go to %s as they finish (a stream: nothing to resume)\n",
                   output_name.c_str());
      // A reader that goes away fails the write with one line, instead of killing the rank.
      std::signal(SIGPIPE, SIG_IGN);
    }
    if (world_rank == 0) log = std::make_unique<ResultLog>(output, overwrite);
  }
  ModelRun run = ModelRun::start(run_options, vm);
  ModelBundle& bundle = run.bundle;
  ProcessGroups& groups = run.groups;
  const bool rank0 = run.rank0;

  if (vm.count("input")) {
    Engine engine(*bundle.model, *bundle.tokenizer, run.engine);
    BatchOptions bo{input, output, overwrite, run_options.stats_interval};
    bo.shard = shard_k;
    bo.shards = shard_n;
    bo.replica = groups.coord.dp;  // data-parallel replicas split the requests
    bo.replicas = groups.shape.dp;
    const BatchTotals t = run_batch(bundle, engine, d, bo, log.get());
    const double wall = engine.stats().run_seconds;
    const Communication comm = communication_totals(groups, wall, engine.stats());
    if (rank0) {
      std::fprintf(stderr,
                   "tessera: %lld requests (%lld had records already), %lld errors, %lld prompt "
                   "and %lld generated tokens in %.1f s; results in %s\n",
                   (long long)t.requests, (long long)t.resumed, (long long)t.errors,
                   (long long)t.prompt_tokens, (long long)t.generated_tokens, wall,
                   output_name.c_str());
      print_speed("prompt", t.prompt_tokens, wall);
      print_speed("generated", t.generated_tokens, wall);
      print_communication(groups, comm, bundle.model->wire());
    }
    report_engine(groups, engine.stats(), run_options.trace);
    return fail_on_error && t.errors > 0 ? 3 : 0;
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
  const Communication comm =
      communication_totals(groups, r.prefill_seconds + r.decode_seconds, gen.stats());
  if (rank0) {
    std::fputs("\n", stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "finish_reason: %s\n", r.finish_reason.c_str());
    print_speed("prefill", r.prompt_tokens, r.prefill_seconds);
    print_speed("decode", int64_t(r.tokens.size()), r.decode_seconds);
    print_communication(groups, comm, bundle.model->wire());
  }
  report_engine(groups, gen.stats(), run_options.trace);
  return 0;
}

}  // namespace tessera::cli
