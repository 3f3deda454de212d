#include "runtime/engine.h"

#include <algorithm>
#include <chrono>

#include "runtime/batch_sampler.h"

namespace tessera {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The longest suffix of `text` that is a proper prefix of some stop string: that much text must
// be held back until we know whether the stop string completes.
size_t held_back(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& s : stops)
    for (size_t k = std::min(s.size() - 1, text.size()); k > hold; --k)
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  return hold;
}

RunnerOptions runner_options(const EngineOptions& o, int64_t window) {
  RunnerOptions r;
  r.num_blocks = o.scheduler.num_blocks;
  r.block_size = o.scheduler.block_size;
  r.kv_dtype = o.kv_dtype;
  if (o.decode_graphs) {
    r.graph_batch = o.scheduler.max_sequences;
    // Every sequence's keys fit its context window and the pool.
    r.graph_keys = std::min(window, o.scheduler.num_blocks * o.scheduler.block_size);
  }
  return r;
}

}  // namespace

struct Engine::Sequence {
  int64_t id = 0;
  GenerationRequest request;
  TextCallback on_text;
  DoneCallback on_done;
  int64_t kv_limit = 0;  // positions it may store: it stops ("length") when it would need more
  bool finished = false;
  GenerationResult result;
  std::unique_ptr<StreamDecoder> decoder;
  size_t emitted = 0;  // result.text[0, emitted) has gone to on_text
  bool stopped_by_string = false;
  bool cancelled = false;  // by cancel() while its sampled token was in flight
  double start = 0, first_token = 0;
  int64_t prompt() const { return int64_t(request.prompt.size()); }
};

Engine::Engine(const LlamaModel& model, const Tokenizer& tokenizer, EngineOptions options)
    : model_(model),
      window_(model.config().context_window(options.max_context)),
      runner_(model, runner_options(options, window_)),
      tokenizer_(tokenizer),
      options_(options) {
  const ModelShard& s = model.shard();
  leader_ = model.stage().first() && s.tp_rank == 0 && s.sp_rank == 0;
  TESSERA_CHECK(options_.max_in_flight >= 0, "max_in_flight must be >= 0");
  const int stages = model.stage().stages();
  max_in_flight_ = options_.max_in_flight > 0 ? options_.max_in_flight : stages;
  SchedulerOptions& so = options_.scheduler;
  so.groups = max_in_flight_;
  so.sp = s.sp_size;
  // Stages work on different chunks of a prompt at once: two chunks per stage.
  so.prompt_chunks = stages > 1 ? 2 * stages : 1;
  TESSERA_CHECK(options_.speculative_tokens >= 0, "speculative_tokens must be >= 0");
  so.speculative_tokens = options_.speculative_tokens;
  if (so.speculative_tokens > 0) {
    if (!options_.proposer) options_.proposer = std::make_shared<NgramProposer>(options_.ngram);
    so.proposer = options_.proposer.get();
    const ops::RowTiling tiling = model.row_tiling();
    so.row_tile = tiling.tile;
    so.row_tile_max_rows = tiling.max_rows;
  }
  scheduler_ = std::make_unique<Scheduler>(so);  // every rank checks the options alike
}

Engine::~Engine() = default;

void Engine::check_fits(const GenerationRequest& r) const {
  TESSERA_CHECK(!r.prompt.empty(), "the prompt is empty");
  TESSERA_CHECK(
      int64_t(r.prompt.size()) < window_,
      "the prompt has " << r.prompt.size() << " tokens; the context window is " << window_);
  TESSERA_CHECK(r.max_tokens >= 1, "max_tokens must be at least 1, got " << r.max_tokens);
  for (const auto& s : r.stop) TESSERA_CHECK(!s.empty(), "a stop string is empty");
  for (int32_t id : r.prompt)
    TESSERA_CHECK(
        id >= 0 && id < model_.config().vocab_size,
        "token id " << id << " is outside the vocabulary of " << model_.config().vocab_size);
  const int64_t prompt = int64_t(r.prompt.size());
  TESSERA_CHECK(scheduler_->fits(prompt, prompt),
                "the prompt's KV cache needs " << scheduler_->blocks_for(prompt, prompt)
                                               << " blocks of " << options_.scheduler.block_size
                                               << " tokens on a rank; a rank holds "
                                               << options_.scheduler.num_blocks
                                               << " (give the KV cache more memory, or spread the "
                                                  "prompt over more ranks with --sp)");
  r.sampling.validate();
}

int64_t Engine::submit(const GenerationRequest& request, TextCallback on_text,
                       DoneCallback on_done) {
  TESSERA_ASSERT(leader_, "requests are submitted on the replica's leader");
  check_fits(request);
  auto s = std::make_unique<Sequence>();
  s->id = next_id_++;
  s->request = request;
  s->on_text = std::move(on_text);
  s->on_done = std::move(on_done);
  const int64_t prompt = s->request.prompt.size();
  // Positions it may store: the window, max_tokens (the last output token is not fed back), and
  // what a rank's pool can hold.
  const int64_t wanted = request.max_tokens > window_ - prompt ? window_ - 1  // (no overflow)
                                                               : prompt + request.max_tokens - 1;
  int64_t limit = std::max(prompt, std::min(window_ - 1, wanted));
  if (!scheduler_->fits(prompt, limit)) {
    int64_t lo = prompt, hi = limit;  // lo fits, hi does not
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      (scheduler_->fits(prompt, mid) ? lo : hi) = mid;
    }
    limit = lo;
  }
  s->kv_limit = limit;
  s->result.prompt_tokens = prompt;
  s->decoder = std::make_unique<StreamDecoder>(tokenizer_);
  s->start = now_seconds();
  const int64_t id = s->id;
  scheduler_->add(id, request.prompt, request.sampling, s->kv_limit);
  sequences_.emplace(id, std::move(s));
  return id;
}

void Engine::finish(Sequence& s, const std::string& reason) {
  GenerationResult& r = s.result;
  if (!s.stopped_by_string) {  // text held back for a stop string that never came is output
    r.text += s.decoder->flush();
    if (s.on_text && r.text.size() > s.emitted) s.on_text(r.text.substr(s.emitted), r);
    s.emitted = r.text.size();
  }
  r.finish_reason = reason;
  r.decode_seconds = r.tokens.empty() ? 0 : now_seconds() - s.first_token;
  s.finished = true;
  s.decoder.reset();
  scheduler_->finish(s.id);
  ++stats_.finished;
  stats_.prompt_tokens += r.prompt_tokens;
  stats_.output_tokens += int64_t(r.tokens.size());
  if (!r.tokens.empty()) {
    stats_.ttft_sum += r.prefill_seconds;
    ++stats_.ttft_count;
  }
  if (r.tokens.size() > 1) {
    stats_.tpot_sum += r.decode_seconds / double(r.tokens.size() - 1);
    ++stats_.tpot_count;
  }
  if (s.on_done) {
    s.on_done(s.id, r);
    sequences_.erase(s.id);  // s is gone
  }
}

void Engine::cancel(int64_t id) {
  TESSERA_ASSERT(leader_, "requests are cancelled on the replica's leader");
  const auto it = sequences_.find(id);
  if (it == sequences_.end() || it->second->finished) return;
  Sequence& s = *it->second;
  if (scheduler_->awaiting(id))
    s.cancelled = true;  // its token is in flight: it ends when the token arrives
  else
    finish(s, "cancelled");
}

bool Engine::accept_token(Sequence& s, int32_t token, const TokenLogprobs& logprobs) {
  GenerationResult& r = s.result;
  const GenerationRequest& q = s.request;
  if (r.tokens.empty()) {
    s.first_token = now_seconds();
    r.prefill_seconds = s.first_token - std::max(s.start, clock_zero_);
  }
  ++stats_.sampled_tokens;
  const auto& stop_ids = tokenizer_.data().stop_ids;
  if (!q.ignore_eos && std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
    finish(s, "stop");
    return false;
  }
  r.tokens.push_back(token);
  if (q.sampling.logprobs >= 0) r.logprobs.push_back(logprobs);
  r.text += s.decoder->push(token);
  for (const auto& stop : q.stop) {
    const size_t at = r.text.find(stop, s.emitted > stop.size() ? s.emitted - stop.size() : 0);
    if (at != std::string::npos) {
      r.text.resize(at);
      s.stopped_by_string = true;
    }
  }
  const size_t safe =
      s.stopped_by_string ? r.text.size() : r.text.size() - held_back(r.text, q.stop);
  if (s.on_text && safe > s.emitted) s.on_text(r.text.substr(s.emitted, safe - s.emitted), r);
  s.emitted = std::max(s.emitted, safe);
  if (s.stopped_by_string) {
    finish(s, "stop");
    return false;
  }
  // Fed back, the token would be stored at position prompt + outputs - 1.
  if (s.prompt() + int64_t(r.tokens.size()) > s.kv_limit) {
    finish(s, "length");
    return false;
  }
  return true;
}

void Engine::apply_tokens(const StepPlan& plan, const SampledTokens& sampled) {
  const std::vector<int32_t>& tokens = sampled.tokens;
  size_t i = 0, seq = 0;
  for (const SequenceWork& w : plan.work) {
    if (!w.sample) continue;
    TESSERA_ASSERT(seq < sampled.counts.size(), "step " << plan.id << " returned too few counts");
    const size_t count = size_t(sampled.counts[seq++]);
    TESSERA_ASSERT(count >= 1 && i + count <= tokens.size(),
                   "step " << plan.id << " returned too few tokens");
    auto it = sequences_.find(w.seq);
    TESSERA_ASSERT(it != sequences_.end(), "step " << plan.id << " sampled for sequence " << w.seq
                                                   << ", which the leader does not hold");
    Sequence& s = *it->second;
    const std::vector<int32_t> these(tokens.begin() + i, tokens.begin() + i + count);
    const size_t first = i;
    i += count;
    if (s.cancelled) {
      finish(s, "cancelled");
      continue;
    }
    // One at a time, as decoding would have made them: a stop or the length ends it there.
    bool going = true;
    for (size_t j = 0; j < count && going; ++j)
      going = accept_token(s, these[j], sampled.logprobs[first + j]);
    if (going)
      scheduler_->append(w.seq, these);
    else
      scheduler_->count_accepted(int64_t(count) - 1);
  }
  TESSERA_ASSERT(i == tokens.size(), "step " << plan.id << " returned too many tokens");
}

void Engine::share_plan_in_first_stage(std::string& bytes) const {
  // The leader is TP rank 0 and SP rank 0 of stage 0: first across its TP group, then each of
  // those across its SP group.
  const ModelShard& s = model_.shard();
  if (s.sp_rank == 0) model_.tp().broadcast_bytes(bytes, 0);
  if (model_.sp()) model_.sp()->broadcast_bytes(bytes, 0);
}

SampledTokens Engine::compute(const StepPlan& plan) {
  if (plan.stop) {
    runner_.execute(plan);
    return {};
  }
  TESSERA_CHECK(options_.fail_at_step <= 0 || plan.id != options_.fail_at_step,
                "injected failure at step " << plan.id << " (fail_at_step)");
  StepOutput out = runner_.execute(plan);
  // (the busy time: computing, not waiting for the stages before and after)
  const EngineSpan span{plan.id, out.compute_begin, out.compute_end, plan.tokens()};
  stats_.busy_seconds += span.end - span.begin;
  if (options_.record_spans) stats_.spans.push_back(span);
  ++stats_.steps;
  return std::move(out.sampled);
}

std::vector<GenerationResult> Engine::run() {
  stats_ = EngineStats{};  // (the scheduler's counts run on over the engine's life)
  clock_zero_ = now_seconds();
  const PipelineStage& stage = model_.stage();
  if (leader_) {
    std::deque<StepPlan> in_flight;  // issued steps whose tokens have not come back, in order
    double next_progress = clock_zero_ + progress_interval_;
    while (true) {
      if (on_progress_ && progress_interval_ > 0 && now_seconds() >= next_progress) {
        next_progress = now_seconds() + progress_interval_;
        on_progress_(now_seconds() - clock_zero_, scheduler_->metrics(), stats_);
      }
      if (feeder_ && scheduler_->metrics().waiting < options_.scheduler.max_sequences &&
          in_flight.size() < size_t(max_in_flight_) && !feeder_())
        feeder_ = nullptr;
      if (service_ && !service_(scheduler_->idle() && in_flight.empty())) service_ = nullptr;
      StepPlan plan;
      if (int(in_flight.size()) < max_in_flight_) plan = scheduler_->schedule();
      if (plan.work.empty() && !in_flight.empty()) {
        apply_tokens(in_flight.front(), runner_.receive_sampled(in_flight.front()));
        in_flight.pop_front();
        continue;
      }
      if (plan.work.empty() && (feeder_ || service_)) continue;  // more may come: ask again
      if (plan.work.empty()) {
        TESSERA_ASSERT(scheduler_->idle(), "the scheduler has sequences but nothing to run");
        plan.stop = true;
      }
      std::string bytes = plan.encode();
      share_plan_in_first_stage(bytes);
      const SampledTokens sampled = compute(plan);
      if (plan.stop) break;
      if (stage.last())
        apply_tokens(plan, sampled);
      else if (plan.samples() > 0)
        in_flight.push_back(std::move(plan));
    }
  } else {
    while (true) {
      StepPlan plan;
      if (stage.first()) {
        std::string bytes;
        share_plan_in_first_stage(bytes);
        plan = StepPlan::decode(bytes);
      } else {
        plan = runner_.receive_plan();
      }
      compute(plan);
      if (plan.stop) break;
    }
  }
  stats_.run_seconds = now_seconds() - clock_zero_;
  stats_.graph_replays = runner_.graph_replays();
  stats_.graphs_captured = runner_.graphs_captured();
  std::vector<GenerationResult> results;
  if (leader_) {
    for (auto& [id, s] : sequences_) results.push_back(std::move(s->result));
    sequences_.clear();
    stats_.scheduler = scheduler_->metrics();
    stats_.block_size = options_.scheduler.block_size;
  }
  return results;
}

}  // namespace tessera
