#include "runtime/batch_sampler.h"

#include <algorithm>
#include <cmath>

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

}  // namespace

uint64_t token_seed(uint64_t seed, int64_t index) {
  return splitmix64(seed ^ splitmix64(uint64_t(index)));
}

std::vector<int32_t> sample_rows(const LlamaModel& model, const Tensor& local_logits,
                                 const std::vector<RowSampling>& rows) {
  const int64_t n = int64_t(rows.size());
  TESSERA_ASSERT(local_logits.dim(0) == n, local_logits.dim(0) << " logits rows for " << n
                                                               << " tokens to sample");
  std::vector<int32_t> out(size_t(n), -1);
  if (n == 0) return out;
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
  const int tp = shard.tp_size;
  std::vector<int64_t> greedy, topk, full;
  int64_t k_max = 0;
  for (int64_t i = 0; i < n; ++i) {
    switch (path_of(rows[size_t(i)].params)) {
      case Path::kGreedy: greedy.push_back(i); break;
      case Path::kTopK:
        topk.push_back(i);
        k_max = std::max<int64_t>(k_max, rows[size_t(i)].params.top_k);
        break;
      case Path::kFull: full.push_back(i); break;
    }
  }
  if (!greedy.empty()) {  // each shard's best (logit, id); ids < 2^24 are exact in a float
    const int64_t g = int64_t(greedy.size());
    Tensor mine = Tensor::empty({g, 2}, DType::kF32);
    for (int64_t j = 0; j < g; ++j) {
      const float* l = logits + greedy[size_t(j)] * part;
      int64_t best = 0;
      for (int64_t v = 1; v < part; ++v)
        if (l[v] > l[best] || (std::isnan(l[best]) && !std::isnan(l[v]))) best = v;
      mine.data<float>()[2 * j] = std::isnan(l[best]) ? -INFINITY : l[best];
      mine.data<float>()[2 * j + 1] = float(shard.vocab.begin + best);
    }
    Tensor all = Tensor::empty({tp * g, 2}, DType::kF32);
    model.tp().all_gather(mine, all);
    const float* a = all.data<float>();
    for (int64_t j = 0; j < g; ++j) {
      int winner = 0;  // larger logit, then lower id (shards are in vocabulary order)
      for (int r = 1; r < tp; ++r)
        if (a[2 * (r * g + j)] > a[2 * (winner * g + j)]) winner = r;
      out[size_t(greedy[size_t(j)])] = int32_t(a[2 * (winner * g + j) + 1]);
    }
  }
  if (!topk.empty()) {  // each shard's k best candidates, padded to the largest k
    const int64_t t = int64_t(topk.size());
    Tensor packed = Tensor::empty({t * k_max, 2}, DType::kF32);
    float* p = packed.data<float>();
    for (int64_t j = 0; j < t; ++j) {
      const RowSampling& row = rows[size_t(topk[size_t(j)])];
      const auto mine = sampler_for(row).shard_candidates(logits + topk[size_t(j)] * part, part,
                                                          shard.vocab.begin, history_of(row));
      for (int64_t i = 0; i < k_max; ++i) {
        const bool real = i < int64_t(mine.size());
        p[2 * (j * k_max + i)] = real ? mine[size_t(i)].first : -INFINITY;
        p[2 * (j * k_max + i) + 1] = real ? float(mine[size_t(i)].second) : -1.0f;
      }
    }
    Tensor all = Tensor::empty({tp * t * k_max, 2}, DType::kF32);
    model.tp().all_gather(packed, all);
    const float* a = all.data<float>();
    for (int64_t j = 0; j < t; ++j) {
      std::vector<Sampler::Candidate> candidates;
      for (int r = 0; r < tp; ++r)
        for (int64_t i = 0; i < k_max; ++i) {
          const float* c = a + 2 * ((r * t + j) * k_max + i);
          if (c[1] >= 0) candidates.push_back({c[0], int32_t(c[1])});
        }
      Sampler s = sampler_for(rows[size_t(topk[size_t(j)])]);
      out[size_t(topk[size_t(j)])] = s.sample_candidates(candidates);
    }
  }
  if (!full.empty()) {  // top-p / min-p alone need every logit
    const int64_t f = int64_t(full.size());
    Tensor mine = Tensor::empty({f, part}, DType::kF32);
    for (int64_t j = 0; j < f; ++j)
      std::copy_n(logits + full[size_t(j)] * part, part, mine.data<float>() + j * part);
    const Tensor whole = model.gather_logits(mine);
    const int64_t vocab = whole.dim(1);
    for (int64_t j = 0; j < f; ++j) {
      const RowSampling& row = rows[size_t(full[size_t(j)])];
      Sampler s = sampler_for(row);
      out[size_t(full[size_t(j)])] = s.sample(whole.data<float>() + j * vocab, vocab, history_of(row));
    }
  }
  return out;
}

}  // namespace tessera
