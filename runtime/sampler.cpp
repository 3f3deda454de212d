#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "kernels/error.h"

namespace tessera {

void SamplingParams::validate() const {
  TESSERA_CHECK(std::isfinite(temperature) && temperature >= 0.0f,
                "temperature must be >= 0, got " << temperature);
  TESSERA_CHECK(top_k >= 0, "top_k must be >= 0, got " << top_k);
  TESSERA_CHECK(top_p > 0.0f && top_p <= 1.0f, "top_p must be in (0, 1], got " << top_p);
  TESSERA_CHECK(min_p >= 0.0f && min_p <= 1.0f, "min_p must be in [0, 1], got " << min_p);
  TESSERA_CHECK(repetition_penalty > 0.0f,
                "repetition_penalty must be > 0, got " << repetition_penalty);
  TESSERA_CHECK(logprobs >= -1 && logprobs <= kMaxLogprobs,
                "logprobs must be in [0, " << kMaxLogprobs << "], got " << logprobs);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  params_.validate();
}

namespace {
// Larger logit first, then lower id, so ties resolve the same on every layout.
bool better(const Sampler::Candidate& a, const Sampler::Candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}
}  // namespace

void Sampler::load_candidates(const float* logits, int64_t n, int64_t first_id,
                              const std::vector<int32_t>& previous,
                              std::vector<Candidate>& out) const {
  out.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i)  // a NaN logit would break every ordering: it never wins
    out[size_t(i)] = {std::isnan(logits[i]) ? -INFINITY : logits[i], int32_t(first_id + i)};
  if (params_.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen(previous.begin(), previous.end());
    for (int32_t id : seen) {
      if (id < first_id || id >= first_id + n) continue;
      float& l = out[size_t(id - first_id)].first;
      l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    }
  }
}

int32_t Sampler::sample(const float* logits, int64_t vocab, const std::vector<int32_t>& previous) {
  TESSERA_ASSERT(vocab > 0, "sampling from an empty vocabulary");
  load_candidates(logits, vocab, 0, previous, candidates_);
  if (params_.greedy())
    return std::min_element(candidates_.begin(), candidates_.end(), better)->second;
  return sample_loaded();
}

std::vector<Sampler::Candidate> Sampler::shard_candidates(const float* logits, int64_t n,
                                                          int64_t first_id,
                                                          const std::vector<int32_t>& previous) const {
  TESSERA_ASSERT(params_.top_k > 0, "shard candidates need top_k");
  std::vector<Candidate> c;
  load_candidates(logits, n, first_id, previous, c);
  const size_t k = std::min(c.size(), size_t(params_.top_k));
  std::partial_sort(c.begin(), c.begin() + long(k), c.end(), better);
  c.resize(k);
  return c;
}

int32_t Sampler::sample_candidates(const std::vector<Candidate>& candidates) {
  TESSERA_ASSERT(params_.top_k > 0 && !candidates.empty(), "sampling from no candidates");
  candidates_ = candidates;
  return sample_loaded();
}

int32_t Sampler::sample_loaded() {
  // Only top-k and top-p need an order; plain temperature and min-p sample in id order.
  if (params_.top_k > 0 && size_t(params_.top_k) < candidates_.size()) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + params_.top_k, candidates_.end(),
                      better);
    candidates_.resize(size_t(params_.top_k));
  } else if (params_.top_k > 0 || params_.top_p < 1.0f) {  // the same order however they came
    std::sort(candidates_.begin(), candidates_.end(), better);
  }
  const size_t n = candidates_.size();
  // Softmax of logits / temperature over the candidates, in double.
  std::vector<double>& probs = probs_;
  probs.resize(n);
  const double t = params_.temperature;
  double mx = -INFINITY;
  for (const auto& c : candidates_) mx = std::max(mx, double(c.first));
  TESSERA_ASSERT(std::isfinite(mx), "every logit is -inf or NaN");
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += probs[i] = std::exp((candidates_[i].first - mx) / t);
  for (double& p : probs) p /= sum;
  // top-p (candidates sorted): the smallest prefix whose mass reaches top_p, at least one token.
  size_t keep = n;
  if (params_.top_p < 1.0f) {
    double mass = 0;
    for (size_t i = 0; i < n; ++i) {
      mass += probs[i];
      if (mass >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  // min-p: drop tokens whose probability is below min_p times the top one's (1 / sum).
  if (params_.min_p > 0.0f) {
    const double floor = params_.min_p / sum;
    for (size_t i = 0; i < keep; ++i)
      if (probs[i] < floor) probs[i] = 0;
  }
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += probs[i];
  // One uniform draw from the seeded generator, mapped through the cumulative distribution.
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_) * kept;
  double acc = 0;
  size_t last = 0;
  for (size_t i = 0; i < keep; ++i) {
    if (probs[i] == 0) continue;
    acc += probs[i];
    last = i;
    if (u < acc) return candidates_[i].second;
  }
  return candidates_[last].second;
}

}  // namespace tessera
