#include "runtime/generator.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace tessera {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
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

}  // namespace

namespace {
int64_t window(const ModelConfig& c, int64_t max_context) {
  TESSERA_CHECK(max_context >= 0, "max_context must be >= 0, got " << max_context);
  return max_context == 0 ? c.max_position_embeddings
                          : std::min(max_context, c.max_position_embeddings);
}
}  // namespace

Generator::Generator(const LlamaModel& model, const Tokenizer& tokenizer, int64_t max_context,
                     int64_t max_kv_rows)
    : model_(model),
      tokenizer_(tokenizer),
      window_(window(model.config(), max_context)),
      max_kv_rows_(max_kv_rows),
      cache_(model.make_cache(std::min<int64_t>(window_, 256))) {}

int32_t Generator::next_token(Sampler& sampler, const SamplingParams& params,
                              const Tensor& local_logits, const std::vector<int32_t>& history) const {
  // The last pipeline stage samples; every stage then has the token.
  const PipelineStage& stage = model_.stage();
  const int32_t token =
      stage.last() ? sample_last_stage(sampler, params, local_logits, history) : -1;
  return stage.share_token(token);
}

int32_t Generator::sample_last_stage(Sampler& sampler, const SamplingParams& params,
                                     const Tensor& local_logits,
                                     const std::vector<int32_t>& history) const {
  const int64_t rows = local_logits.dim(0), part = local_logits.dim(1);
  const Tensor last = local_logits.rows(rows - 1, rows);
  const ModelShard& shard = model_.shard();
  if (shard.tp_size == 1) return sampler.sample(last.data<float>(), part, history);
  if (params.greedy() && params.repetition_penalty == 1.0f) {
    // Greedy needs only each shard's best candidate, not the whole vocabulary.
    const float* l = last.data<float>();
    int64_t best = 0;
    for (int64_t i = 1; i < part; ++i)
      if (l[i] > l[best] || (std::isnan(l[best]) && !std::isnan(l[i]))) best = i;
    Tensor mine = Tensor::from_f32({std::isnan(l[best]) ? -INFINITY : l[best],
                                    float(shard.vocab.begin + best)},
                                   {1, 2});
    Tensor all = Tensor::empty({shard.tp_size, 2}, DType::kF32);
    model_.tp().all_gather(mine, all);
    const float* a = all.data<float>();
    int winner = 0;  // larger logit, then lower id (shards are in vocabulary order)
    for (int r = 1; r < shard.tp_size; ++r)
      if (a[2 * r] > a[2 * winner]) winner = r;
    return int32_t(a[2 * winner + 1]);
  }
  if (params.top_k > 0) {
    // Top-k needs only each shard's k best: gather k candidates per rank, not the vocabulary.
    const auto mine = sampler.shard_candidates(last.data<float>(), part, shard.vocab.begin, history);
    const int64_t k = params.top_k;
    Tensor packed = Tensor::empty({k, 2}, DType::kF32);  // (logit, id); ids < 2^24 are exact
    for (int64_t i = 0; i < k; ++i) {
      const bool real = i < int64_t(mine.size());
      packed.data<float>()[2 * i] = real ? mine[size_t(i)].first : -INFINITY;
      packed.data<float>()[2 * i + 1] = real ? float(mine[size_t(i)].second) : -1.0f;
    }
    Tensor all = Tensor::empty({shard.tp_size * k, 2}, DType::kF32);
    model_.tp().all_gather(packed, all);
    std::vector<Sampler::Candidate> candidates;
    for (int64_t i = 0; i < shard.tp_size * k; ++i)
      if (all.data<float>()[2 * i + 1] >= 0)
        candidates.push_back({all.data<float>()[2 * i], int32_t(all.data<float>()[2 * i + 1])});
    return sampler.sample_candidates(candidates);
  }
  const Tensor full = model_.gather_logits(last);  // top-p / min-p alone need every logit
  return sampler.sample(full.data<float>(), full.dim(1), history);
}

void Generator::check_fits(const GenerationRequest& r) const {
  const int64_t ctx = window_;
  TESSERA_CHECK(!r.prompt.empty(), "the prompt is empty");
  TESSERA_CHECK(int64_t(r.prompt.size()) < ctx, "the prompt has " << r.prompt.size()
                                                    << " tokens; the context window is " << ctx);
  TESSERA_CHECK(r.max_tokens >= 1, "max_tokens must be at least 1, got " << r.max_tokens);
  for (const auto& s : r.stop) TESSERA_CHECK(!s.empty(), "a stop string is empty");
  const int64_t prompt = int64_t(r.prompt.size());
  if (max_kv_rows_ > 0) {
    const int64_t rows = model_.kv_rows_needed(prompt, prompt);
    TESSERA_CHECK(rows <= max_kv_rows_,
                  "the prompt's KV cache needs " << rows << " tokens on a rank; a rank holds at most "
                                                 << max_kv_rows_
                                                 << " (spread it over more ranks with --sp)");
  }
  r.sampling.validate();
}

GenerationResult Generator::generate(const GenerationRequest& r,
                                     const std::function<void(const std::string&)>& on_text) {
  check_fits(r);
  const int64_t ctx = window_;
  const auto& stop_ids = tokenizer_.data().stop_ids;
  GenerationResult res;
  res.prompt_tokens = int64_t(r.prompt.size());
  cache_.clear();
  // Positions fed to the model: the prompt and every generated token but the last.
  const int64_t total = std::min(ctx, res.prompt_tokens + r.max_tokens - 1);
  cache_.reserve(model_.kv_rows_needed(res.prompt_tokens, total));
  Sampler sampler(r.sampling);
  StreamDecoder decoder(tokenizer_);
  std::vector<int32_t> history = r.prompt;
  size_t emitted = 0;  // res.text[0, emitted) has been passed to on_text
  bool stopped_by_string = false;

  auto t0 = std::chrono::steady_clock::now();
  // Microbatches keep every pipeline stage busy during prefill (two per stage).
  const int64_t stages = model_.stage().stages();
  const int64_t microbatch =
      stages == 1             ? 0
      : prefill_microbatch_ > 0 ? prefill_microbatch_
                                : std::max<int64_t>(16, (res.prompt_tokens + 2 * stages - 1) / (2 * stages));
  // (With sequence parallelism the prompt is split over the SP group instead.)
  Tensor logits = model_.prefill(r.prompt, cache_, microbatch);
  // Prefill ends when every rank has the first token (the last pipeline stage may still be
  // working when the first has sent its part).
  int32_t next = next_token(sampler, r.sampling, logits, history);
  res.prefill_seconds = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  res.finish_reason = "length";
  while (true) {
    if (!r.ignore_eos && std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
      res.finish_reason = "stop";
      break;
    }
    res.tokens.push_back(next);
    history.push_back(next);
    res.text += decoder.push(next);
    for (const auto& s : r.stop) {
      const size_t at = res.text.find(s, emitted > s.size() ? emitted - s.size() : 0);
      if (at != std::string::npos) {
        res.text.resize(at);
        stopped_by_string = true;
      }
    }
    const size_t safe =
        stopped_by_string ? res.text.size() : res.text.size() - held_back(res.text, r.stop);
    if (on_text && safe > emitted) on_text(res.text.substr(emitted, safe - emitted));
    emitted = std::max(emitted, safe);
    if (stopped_by_string) {
      res.finish_reason = "stop";
      break;
    }
    // prompt + generated tokens may not pass the context window.
    if (int64_t(res.tokens.size()) >= r.max_tokens || cache_.length() + 1 >= ctx) break;
    if (max_kv_rows_ > 0 &&
        model_.kv_rows_needed(res.prompt_tokens, cache_.length() + 1) > max_kv_rows_)
      break;  // a rank's KV cache is full
    logits = model_.forward({next}, cache_);
    next = next_token(sampler, r.sampling, logits, history);
  }
  if (!stopped_by_string) {  // text held back for a stop string that never came is output
    res.text += decoder.flush();
    if (on_text && res.text.size() > emitted) on_text(res.text.substr(emitted));
  }
  res.decode_seconds = seconds_since(t0);
  return res;
}

}  // namespace tessera
