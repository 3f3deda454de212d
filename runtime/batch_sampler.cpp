#include "runtime/batch_sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "kernels/ops.h"

namespace tessera {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

Sampler sampler_for(const RowSampling& row) {
  SamplingParams p = row.params;
  p.seed = token_seed(p.seed, row.output_index);
  return Sampler(p);
}

const std::vector<int32_t>& history_of(const RowSampling& row) {
  static const std::vector<int32_t> none;
  return row.history ? *row.history : none;
}

enum class Path { kGreedy, kTopK, kFull };

Path path_of(const SamplingParams& p) {
  if (p.greedy() && p.repetition_penalty == 1.0f) return Path::kGreedy;
  if (p.top_k > 0) return Path::kTopK;
  return Path::kFull;
}

using Candidate = Sampler::Candidate;

// The order the sampler ranks candidates in: larger logit first, lower id on ties.
bool better(const Candidate& a, const Candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// Each row's token from this rank's candidates of it (best first, vocabulary ids), merged over
// the TP group: a greedy row takes the best of all shards' candidates, the others draw from them
// with their seeded sampler.
std::vector<int32_t> sample_from_candidates(const LlamaModel& model,
                                            const std::vector<RowSampling>& rows,
                                            const std::vector<std::vector<Candidate>>& mine) {
  const int64_t n = int64_t(rows.size());
  const int tp = model.shard().tp_size;
  std::vector<std::vector<Candidate>> all = mine;
  if (tp > 1) {  // every shard's candidates, padded to the largest count
    int64_t k_max = 0;
    for (const auto& c : mine) k_max = std::max<int64_t>(k_max, int64_t(c.size()));
    Tensor packed = Tensor::empty({n * k_max, 2}, DType::kF32);
    float* p = packed.data<float>();
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < k_max; ++i) {
        const bool real = i < int64_t(mine[size_t(j)].size());
        p[2 * (j * k_max + i)] = real ? mine[size_t(j)][size_t(i)].first : -INFINITY;
        p[2 * (j * k_max + i) + 1] = real ? float(mine[size_t(j)][size_t(i)].second) : -1.0f;
      }
    Tensor gathered = Tensor::empty({tp * n * k_max, 2}, DType::kF32);
    model.tp().all_gather(packed, gathered);
    const float* a = gathered.data<float>();
    for (int64_t j = 0; j < n; ++j) {
      all[size_t(j)].clear();
      for (int r = 0; r < tp; ++r)
        for (int64_t i = 0; i < k_max; ++i) {
          const float* c = a + 2 * ((r * n + j) * k_max + i);
          if (c[1] >= 0) all[size_t(j)].push_back({c[0], int32_t(c[1])});
        }
    }
  }
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    const RowSampling& row = rows[size_t(j)];
    const std::vector<Candidate>& c = all[size_t(j)];
    TESSERA_ASSERT(!c.empty(), "sampling from no candidates");
    if (row.params.greedy())
      out[size_t(j)] = std::min_element(c.begin(), c.end(), better)->second;
    else
      out[size_t(j)] = sampler_for(row).sample_candidates(c);
  }
  return out;
}

// The candidates each row needs from this shard, computed where the logits are (a GPU): the
// repetition penalty and the top-k selection on the device, then only (rows, k) candidates come
// to the host instead of the rows of logits. A greedy row needs 1 candidate.
std::vector<std::vector<Candidate>> device_candidates(const LlamaModel& model, const Tensor& logits,
                                                      const std::vector<RowSampling>& rows) {
  const int64_t n = int64_t(rows.size()), part = logits.dim(1);
  const Range vocab = model.shard().vocab;
  Tensor l = logits;                                 // penalised in place (the step's own tensor)
  std::map<float, std::vector<int64_t>> by_penalty;  // rows of each penalty other than 1
  int64_t k_max = 1;
  for (int64_t i = 0; i < n; ++i) {
    const SamplingParams& p = rows[size_t(i)].params;
    if (!p.greedy()) k_max = std::max<int64_t>(k_max, p.top_k);
    if (p.repetition_penalty != 1.0f) by_penalty[p.repetition_penalty].push_back(i);
  }
  for (const auto& [penalty, which] : by_penalty) {
    std::vector<int32_t> ids, offsets(size_t(n) + 1, 0);
    size_t w = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (w < which.size() && which[w] == i) {
        std::vector<int32_t> h = history_of(rows[size_t(i)]);  // distinct, in this shard
        std::sort(h.begin(), h.end());
        h.erase(std::unique(h.begin(), h.end()), h.end());
        for (const int32_t id : h)
          if (id >= vocab.begin && id < vocab.end) ids.push_back(int32_t(id - vocab.begin));
        ++w;
      }
      offsets[size_t(i) + 1] = int32_t(ids.size());
    }
    if (ids.empty()) continue;
    const Device d = l.device();
    const Tensor gids = Tensor::from_i32(ids, {int64_t(ids.size())}).to(d);
    const Tensor goffsets = Tensor::from_i32(offsets, {n + 1}).to(d);
    ops::repetition_penalty(l, gids, goffsets, penalty);
  }
  const int k = int(std::min(k_max, part));
  Tensor values = Tensor::empty({n, k}, DType::kF32, l.device());
  Tensor ids = Tensor::empty({n, k}, DType::kI32, l.device());
  ops::top_k(l, k, values, ids);
  const Tensor hv = values.to(Device::cpu()), hi = ids.to(Device::cpu());
  std::vector<std::vector<Candidate>> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const SamplingParams& p = rows[size_t(i)].params;
    const int64_t want = std::min<int64_t>(p.greedy() ? 1 : p.top_k, k);
    for (int64_t j = 0; j < want; ++j)
      out[size_t(i)].push_back(
          {hv.data<float>()[i * k + j], int32_t(vocab.begin + hi.data<int32_t>()[i * k + j])});
  }
  return out;
}

}  // namespace

uint64_t token_seed(uint64_t seed, int64_t index) {
  return splitmix64(seed ^ splitmix64(uint64_t(index)));
}

std::vector<int32_t> sample_rows(const LlamaModel& model, const Tensor& local_logits,
                                 const std::vector<RowSampling>& rows) {
  const int64_t n = int64_t(rows.size());
  TESSERA_ASSERT(local_logits.dim(0) == n, local_logits.dim(0)
                                               << " logits rows for " << n << " tokens to sample");
  std::vector<int32_t> out(size_t(n), -1);
  if (n == 0) return out;
  if (!local_logits.device().is_cpu()) {
    // On the GPU when every row needs only its top k (k <= 1024) or its best; otherwise (top-p
    // or min-p alone need every logit) the rows come to the host.
    bool on_device = true;
    for (const RowSampling& r : rows)
      on_device &= r.params.greedy() || (r.params.top_k > 0 && r.params.top_k <= ops::kMaxTopK);
    if (on_device)
      return sample_from_candidates(model, rows, device_candidates(model, local_logits, rows));
    Tensor host = Tensor::empty(local_logits.shape(), DType::kF32);
    ops::convert(local_logits, host);
    return sample_rows(model, host, rows);
  }
  const int64_t part = local_logits.dim(1);
  const ModelShard& shard = model.shard();
  const float* logits = local_logits.data<float>();
  if (shard.tp_size == 1) {
    for (int64_t i = 0; i < n; ++i) {
      Sampler s = sampler_for(rows[size_t(i)]);
      out[size_t(i)] = s.sample(logits + i * part, part, history_of(rows[size_t(i)]));
    }
    return out;
  }
  std::vector<int64_t> greedy, topk, full;
  for (int64_t i = 0; i < n; ++i) {
    switch (path_of(rows[size_t(i)].params)) {
      case Path::kGreedy:
        greedy.push_back(i);
        break;
      case Path::kTopK:
        topk.push_back(i);
        break;
      case Path::kFull:
        full.push_back(i);
        break;
    }
  }
  // Greedy rows send each shard's best (logit, id), top-k rows its k best; one gather for both.
  // (ids < 2^24 are exact in a float.)
  std::vector<int64_t> picked;
  std::vector<RowSampling> sub;
  std::vector<std::vector<Candidate>> mine;
  for (const int64_t i : greedy) {
    const float* l = logits + i * part;
    int64_t best = 0;
    for (int64_t v = 1; v < part; ++v)
      if (l[v] > l[best] || (std::isnan(l[best]) && !std::isnan(l[v]))) best = v;
    picked.push_back(i);
    sub.push_back(rows[size_t(i)]);
    mine.push_back(
        {{std::isnan(l[best]) ? -INFINITY : l[best], int32_t(shard.vocab.begin + best)}});
  }
  for (const int64_t i : topk) {
    const RowSampling& row = rows[size_t(i)];
    picked.push_back(i);
    sub.push_back(row);
    mine.push_back(sampler_for(row).shard_candidates(logits + i * part, part, shard.vocab.begin,
                                                     history_of(row)));
  }
  if (!picked.empty()) {
    const std::vector<int32_t> got = sample_from_candidates(model, sub, mine);
    for (size_t j = 0; j < picked.size(); ++j) out[size_t(picked[j])] = got[j];
  }
  if (!full.empty()) {  // top-p / min-p alone need every logit
    const int64_t f = int64_t(full.size());
    Tensor mine = Tensor::empty({f, part}, DType::kF32);
    for (int64_t j = 0; j < f; ++j)
      std::copy_n(logits + full[size_t(j)] * part, part, mine.data<float>() + j * part);
    const Tensor whole = gather_vocab_shards(mine, model.tp());
    const int64_t vocab = whole.dim(1);
    for (int64_t j = 0; j < f; ++j) {
      const RowSampling& row = rows[size_t(full[size_t(j)])];
      Sampler s = sampler_for(row);
      out[size_t(full[size_t(j)])] =
          s.sample(whole.data<float>() + j * vocab, vocab, history_of(row));
    }
  }
  return out;
}

TokenLogprobs logprobs_of(const float* logits, int64_t vocab, int32_t token, int top) {
  auto value = [&](int64_t i) { return std::isnan(logits[i]) ? -INFINITY : logits[i]; };
  float best = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) best = std::max(best, value(i));
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(value(i)) - double(best));
  const double log_z = double(best) + std::log(sum);
  TokenLogprobs out;
  TESSERA_ASSERT(token >= 0 && token < vocab, "token " << token << " outside a row of " << vocab);
  out.logprob = float(double(value(token)) - log_z);
  const int64_t n = std::min<int64_t>(top, vocab);
  if (n <= 0) return out;
  std::vector<Candidate> c;
  c.reserve(size_t(vocab));
  for (int64_t i = 0; i < vocab; ++i) c.push_back({value(i), int32_t(i)});
  std::partial_sort(c.begin(), c.begin() + n, c.end(), better);
  for (int64_t i = 0; i < n; ++i)
    out.top.push_back({c[size_t(i)].second, float(double(c[size_t(i)].first) - log_z)});
  return out;
}

SampledTokens sample_with_logprobs(const LlamaModel& model, const Tensor& local_logits,
                                   const std::vector<RowSampling>& rows) {
  std::vector<int64_t> asking;
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i].params.logprobs >= 0) asking.push_back(int64_t(i));
  // The rows' raw logits, whole, before sampling (which may penalise them in place on a GPU).
  Tensor whole;
  if (!asking.empty()) {
    Tensor host = local_logits;
    if (!local_logits.device().is_cpu() || local_logits.dtype() != DType::kF32) {
      host = Tensor::empty(local_logits.shape(), DType::kF32);
      ops::convert(local_logits, host);
    }
    const int64_t part = host.dim(1);
    Tensor mine = Tensor::empty({int64_t(asking.size()), part}, DType::kF32);
    for (size_t j = 0; j < asking.size(); ++j)
      std::memcpy(mine.data<float>() + int64_t(j) * part, host.data<float>() + asking[j] * part,
                  size_t(part) * sizeof(float));
    whole = gather_vocab_shards(mine, model.tp());
  }
  SampledTokens out;
  out.tokens = sample_rows(model, local_logits, rows);
  out.logprobs.resize(rows.size());
  for (size_t j = 0; j < asking.size(); ++j) {
    const int64_t i = asking[j], vocab = whole.dim(1);
    out.logprobs[size_t(i)] = logprobs_of(whole.data<float>() + int64_t(j) * vocab, vocab,
                                          out.tokens[size_t(i)], rows[size_t(i)].params.logprobs);
  }
  return out;
}

namespace {
int32_t float_bits(float f) {
  int32_t w;
  std::memcpy(&w, &f, sizeof w);
  return w;
}
float bits_float(int32_t w) {
  float f;
  std::memcpy(&f, &w, sizeof f);
  return f;
}
}  // namespace

int64_t sampled_words(int logprobs) {
  return logprobs < 0 ? 1 : 2 + 2 * int64_t(logprobs);
}

void append_sampled(std::vector<int32_t>& words, int32_t token, const TokenLogprobs& lp,
                    int logprobs) {
  words.push_back(token);
  if (logprobs < 0) return;
  words.push_back(float_bits(lp.logprob));
  for (int i = 0; i < logprobs; ++i) {  // a vocabulary smaller than `logprobs` pads with -1
    const bool real = size_t(i) < lp.top.size();
    words.push_back(real ? lp.top[size_t(i)].first : -1);
    words.push_back(float_bits(real ? lp.top[size_t(i)].second : -INFINITY));
  }
}

int32_t read_sampled(const std::vector<int32_t>& words, size_t& at, int logprobs,
                     TokenLogprobs& lp) {
  TESSERA_ASSERT(at + size_t(sampled_words(logprobs)) <= words.size(),
                 "a step's sampled tokens are cut short");
  const int32_t token = words[at++];
  lp = TokenLogprobs{};
  if (logprobs < 0) return token;
  lp.logprob = bits_float(words[at++]);
  for (int i = 0; i < logprobs; ++i, at += 2)
    if (words[at] >= 0) lp.top.push_back({words[at], bits_float(words[at + 1])});
  return token;
}

}  // namespace tessera
