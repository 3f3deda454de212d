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

int64_t window_of(const ModelConfig& c, int64_t max_context) {
  TESSERA_CHECK(max_context >= 0, "max_context must be >= 0, got " << max_context);
  return max_context == 0 ? c.max_position_embeddings
                          : std::min(max_context, c.max_position_embeddings);
}

}  // namespace

struct Engine::Sequence {
  int64_t id = 0;
  GenerationRequest request;
  TextCallback on_text;
  DoneCallback on_done;
  std::vector<int32_t> known;  // the prompt, then each output token that is to be fed back
  int64_t fed = 0;             // tokens of `known` given to steps so far
  int64_t kv_rows = 0;         // KV rows a rank reserves for it at most
  bool awaiting = false;       // a step that samples its next token is in flight
  bool finished = false;
  GenerationResult result;
  std::unique_ptr<StreamDecoder> decoder;
  size_t emitted = 0;  // result.text[0, emitted) has gone to on_text
  bool stopped_by_string = false;
  double start = 0, first_token = 0;
  int64_t prompt() const { return int64_t(request.prompt.size()); }
};

Engine::Engine(const LlamaModel& model, const Tokenizer& tokenizer, EngineOptions options)
    : model_(model),
      tokenizer_(tokenizer),
      options_(options),
      window_(window_of(model.config(), options.max_context)) {
  const ModelShard& s = model.shard();
  leader_ = model.stage().first() && s.tp_rank == 0 && s.sp_rank == 0;
  TESSERA_CHECK(options_.max_sequences >= 1, "max_sequences must be at least 1");
  TESSERA_CHECK(options_.max_step_tokens >= 1, "max_step_tokens must be at least 1");
  TESSERA_CHECK(options_.prefill_chunk >= 0, "the prefill chunk must be >= 0");
  TESSERA_CHECK(options_.max_kv_rows >= 0, "the KV cap must be >= 0");
  TESSERA_CHECK(options_.max_in_flight >= 0, "max_in_flight must be >= 0");
  max_in_flight_ = options_.max_in_flight > 0 ? options_.max_in_flight : model.stage().stages();
}

Engine::~Engine() = default;

void Engine::check_fits(const GenerationRequest& r) const {
  TESSERA_CHECK(!r.prompt.empty(), "the prompt is empty");
  TESSERA_CHECK(int64_t(r.prompt.size()) < window_, "the prompt has " << r.prompt.size()
                                                        << " tokens; the context window is "
                                                        << window_);
  TESSERA_CHECK(r.max_tokens >= 1, "max_tokens must be at least 1, got " << r.max_tokens);
  for (const auto& s : r.stop) TESSERA_CHECK(!s.empty(), "a stop string is empty");
  for (int32_t id : r.prompt)
    TESSERA_CHECK(id >= 0 && id < model_.config().vocab_size,
                  "token id " << id << " is outside the vocabulary of "
                              << model_.config().vocab_size);
  const int64_t prompt = int64_t(r.prompt.size());
  if (options_.max_kv_rows > 0) {
    const int64_t rows = model_.kv_rows_needed(prompt, prompt);
    TESSERA_CHECK(rows <= options_.max_kv_rows,
                  "the prompt's KV cache needs " << rows << " tokens on a rank; a rank holds at most "
                                                 << options_.max_kv_rows
                                                 << " (spread it over more ranks with --sp)");
  }
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
  s->known = request.prompt;
  const int64_t prompt = s->prompt();
  const int64_t total = std::min(window_, prompt + request.max_tokens - 1);
  s->kv_rows = model_.kv_rows_needed(prompt, total);
  if (options_.max_kv_rows > 0) s->kv_rows = std::min(s->kv_rows, options_.max_kv_rows);
  s->result.prompt_tokens = prompt;
  s->decoder = std::make_unique<StreamDecoder>(tokenizer_);
  s->start = now_seconds();
  const int64_t id = s->id;
  sequences_.emplace(id, std::move(s));
  return id;
}

bool Engine::all_finished() const {
  return std::all_of(sequences_.begin(), sequences_.end(),
                     [](const auto& s) { return s.second->finished; });
}

StepPlan Engine::next_plan() {
  StepPlan plan;
  int64_t unfinished = 0, running = 0;
  for (const auto& [id, s] : sequences_) {
    unfinished += !s->finished;
    running += !s->finished && s->fed > 0;
  }
  // Sequences are split into one group per step in flight, so the pipeline holds several
  // batches at once.
  const int64_t active = std::min(unfinished, options_.max_sequences);
  const int64_t per_step = std::max<int64_t>(1, (active + max_in_flight_ - 1) / max_in_flight_);
  const int stages = model_.stage().stages();
  const bool sp = model_.shard().sp_size > 1;
  int64_t budget = options_.max_step_tokens;
  auto add = [&](Sequence& s, int64_t n) {
    SequenceWork w;
    w.seq = s.id;
    w.position = s.fed;
    w.tokens.assign(s.known.begin() + s.fed, s.known.begin() + s.fed + n);
    if (s.fed == 0) w.kv_rows = s.kv_rows;
    s.fed += n;
    w.sample = s.fed == int64_t(s.known.size());
    if (w.sample) {
      w.output_index = int64_t(s.result.tokens.size());
      w.sampling = s.request.sampling;
      s.awaiting = true;
    }
    budget -= n;
    plan.work.push_back(std::move(w));
  };
  auto ready = [](const Sequence& s) {
    return !s.finished && !s.awaiting && s.fed < int64_t(s.known.size());
  };
  // Decode first (one token each), then prompts in arrival order.
  for (auto& [id, p] : sequences_) {
    Sequence& s = *p;
    if (int64_t(plan.work.size()) >= per_step || budget < 1) break;
    if (ready(s) && s.fed >= s.prompt()) add(s, 1);
  }
  for (auto& [id, p] : sequences_) {
    Sequence& s = *p;
    if (int64_t(plan.work.size()) >= per_step || budget < 1) break;
    if (!ready(s) || s.fed >= s.prompt()) continue;
    if (s.fed == 0 && running >= options_.max_sequences) break;  // admission
    const int64_t left = s.prompt() - s.fed;
    if (sp) {  // a sequence-parallel prompt is split over the SP group: whole, in a step alone
      if (!plan.work.empty()) break;
      add(s, left);
      break;
    }
    int64_t chunk = left;
    if (stages > 1) {
      const int64_t mb = options_.prefill_chunk > 0
                             ? options_.prefill_chunk
                             : std::max<int64_t>(16, (s.prompt() + 2 * stages - 1) / (2 * stages));
      chunk = std::min(chunk, mb);
    }
    chunk = std::min(chunk, budget);
    if (s.fed == 0) ++running;
    add(s, chunk);
  }
  if (plan.work.empty()) return plan;
  plan.id = next_step_++;
  plan.release.swap(release_);
  return plan;
}

void Engine::finish(Sequence& s, const std::string& reason) {
  GenerationResult& r = s.result;
  if (!s.stopped_by_string) {  // text held back for a stop string that never came is output
    r.text += s.decoder->flush();
    if (s.on_text && r.text.size() > s.emitted) s.on_text(r.text.substr(s.emitted));
    s.emitted = r.text.size();
  }
  r.finish_reason = reason;
  r.decode_seconds = now_seconds() - s.first_token;
  s.finished = true;
  s.decoder.reset();
  release_.push_back(s.id);
  if (s.on_done) {
    s.on_done(s.id, r);
    sequences_.erase(s.id);  // s is gone
  }
}

void Engine::accept_token(Sequence& s, int32_t token) {
  GenerationResult& r = s.result;
  const GenerationRequest& q = s.request;
  if (r.tokens.empty()) {
    s.first_token = now_seconds();
    r.prefill_seconds = s.first_token - std::max(s.start, clock_zero_);
  }
  const auto& stop_ids = tokenizer_.data().stop_ids;
  if (!q.ignore_eos && std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end())
    return finish(s, "stop");
  r.tokens.push_back(token);
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
  if (s.on_text && safe > s.emitted) s.on_text(r.text.substr(s.emitted, safe - s.emitted));
  s.emitted = std::max(s.emitted, safe);
  if (s.stopped_by_string) return finish(s, "stop");
  // prompt + output tokens may not pass the context window, nor a rank's KV cap.
  const int64_t length = s.prompt() + int64_t(r.tokens.size());
  if (int64_t(r.tokens.size()) >= q.max_tokens || length >= window_) return finish(s, "length");
  if (options_.max_kv_rows > 0 &&
      model_.kv_rows_needed(s.prompt(), length) > options_.max_kv_rows)
    return finish(s, "length");
  s.known.push_back(token);
}

void Engine::apply_tokens(const StepPlan& plan, const std::vector<int32_t>& tokens) {
  size_t i = 0;
  for (const SequenceWork& w : plan.work) {
    if (!w.sample) continue;
    TESSERA_ASSERT(i < tokens.size(), "step " << plan.id << " returned too few tokens");
    auto it = sequences_.find(w.seq);
    TESSERA_ASSERT(it != sequences_.end(), "step " << plan.id << " sampled for sequence " << w.seq
                                                   << ", which the leader does not hold");
    Sequence& s = *it->second;
    s.awaiting = false;
    accept_token(s, tokens[i++]);
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

std::vector<int32_t> Engine::compute(const StepPlan& plan) {
  const PipelineStage& stage = model_.stage();
  if (plan.stop) {
    stage.send_plan(plan.encode());
    return {};
  }
  TESSERA_CHECK(options_.fail_at_step <= 0 || plan.id != options_.fail_at_step,
                "injected failure at step " << plan.id << " (fail_at_step)");
  for (int64_t id : plan.release) {
    caches_.erase(id);
    histories_.erase(id);
  }
  std::vector<BatchRows> batch;
  std::vector<int32_t> tokens;
  for (const SequenceWork& w : plan.work) {
    if (w.position == 0) {
      caches_.erase(w.seq);
      caches_.emplace(w.seq, model_.make_cache(std::min<int64_t>(w.kv_rows, 64)));
      histories_[w.seq].clear();
    }
    auto it = caches_.find(w.seq);
    TESSERA_ASSERT(it != caches_.end(), "step " << plan.id << " continues sequence " << w.seq
                                                << ", which this rank does not hold");
    SequenceKvCache& cache = it->second;
    const int64_t n = int64_t(w.tokens.size());
    if (cache.rows() + n > cache.capacity())  // grows geometrically
      cache.reserve(std::max(cache.rows() + n, 2 * cache.capacity()));
    batch.push_back({&cache, n, w.sample ? 1 : 0});
    tokens.insert(tokens.end(), w.tokens.begin(), w.tokens.end());
    if (stage.last()) {
      std::vector<int32_t>& h = histories_[w.seq];
      h.insert(h.end(), w.tokens.begin(), w.tokens.end());
    }
  }
  Tensor hidden;
  if (!stage.first()) {
    hidden = Tensor::empty({model_.local_rows(batch), model_.config().hidden_size}, DType::kF32);
    stage.receive(hidden);
  }
  EngineSpan span{plan.id, now_seconds(), 0, plan.tokens()};
  const Tensor out = model_.forward_stage(tokens, batch, hidden);
  std::vector<int32_t> sampled;
  if (stage.last()) {
    std::vector<RowSampling> rows;
    for (const SequenceWork& w : plan.work)
      if (w.sample) rows.push_back({w.sampling, w.output_index, &histories_[w.seq]});
    sampled = sample_rows(model_, out, rows);
  }
  span.end = now_seconds();
  stats_.busy_seconds += span.end - span.begin;
  stats_.spans.push_back(span);
  ++stats_.steps;
  if (!stage.last()) {
    stage.send_plan(plan.encode());
    stage.send(out);
  } else if (!stage.first() && model_.shard().tp_rank == 0 && model_.shard().sp_rank == 0 &&
             !sampled.empty()) {
    std::vector<int32_t> message = {int32_t(plan.id & 0x7fffffff)};
    message.insert(message.end(), sampled.begin(), sampled.end());
    stage.send_to_first(Tensor::from_i32(message, {int64_t(message.size())}));
  }
  return sampled;
}

std::vector<GenerationResult> Engine::run() {
  stats_ = EngineStats{};
  clock_zero_ = now_seconds();
  const PipelineStage& stage = model_.stage();
  if (leader_) {
    std::deque<StepPlan> in_flight;  // issued steps whose tokens have not come back, in order
    while (true) {
      if (feeder_) {
        int64_t waiting = 0;
        for (const auto& [id, s] : sequences_) waiting += !s->finished && s->fed == 0;
        if (waiting < options_.max_sequences && in_flight.size() < size_t(max_in_flight_) &&
            !feeder_())
          feeder_ = nullptr;
      }
      StepPlan plan;
      if (int(in_flight.size()) < max_in_flight_) plan = next_plan();
      if (plan.work.empty() && !in_flight.empty()) {
        const StepPlan& oldest = in_flight.front();
        Tensor t = Tensor::empty({1 + oldest.samples()}, DType::kI32);
        stage.receive_from_last(t);
        TESSERA_ASSERT(t.data<int32_t>()[0] == int32_t(oldest.id & 0x7fffffff),
                       "tokens of step " << t.data<int32_t>()[0] << " arrived for step "
                                         << oldest.id);
        apply_tokens(oldest, std::vector<int32_t>(t.data<int32_t>() + 1,
                                                  t.data<int32_t>() + t.numel()));
        in_flight.pop_front();
        continue;
      }
      if (plan.work.empty() && feeder_) continue;  // it has more requests: ask again
      if (plan.work.empty()) {
        TESSERA_ASSERT(all_finished(), "the scheduler has unfinished sequences but nothing to run");
        plan.stop = true;
        plan.release.swap(release_);
      }
      std::string bytes = plan.encode();
      share_plan_in_first_stage(bytes);
      const std::vector<int32_t> tokens = compute(plan);
      if (plan.stop) break;
      if (stage.last())
        apply_tokens(plan, tokens);
      else if (plan.samples() > 0)
        in_flight.push_back(std::move(plan));
    }
  } else {
    while (true) {
      std::string bytes;
      if (stage.first())
        share_plan_in_first_stage(bytes);
      else
        stage.receive_plan(bytes);
      const StepPlan plan = StepPlan::decode(bytes);
      compute(plan);
      if (plan.stop) break;
    }
  }
  caches_.clear();
  histories_.clear();
  stats_.run_seconds = now_seconds() - clock_zero_;
  std::vector<GenerationResult> results;
  if (leader_) {
    for (auto& [id, s] : sequences_) results.push_back(std::move(s->result));
    sequences_.clear();
  }
  return results;
}

}  // namespace tessera
