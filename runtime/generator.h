// One request at a time through the model: prefill the prompt, then decode token by token until
// a stop id, a stop string, max_tokens or the context window ends it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "runtime/llama_model.h"
#include "runtime/sampler.h"

namespace tessera {

struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids, special tokens included
  SamplingParams sampling;
  int64_t max_tokens = 256;
  std::vector<std::string> stop;  // stop strings (not included in the output text)
  bool ignore_eos = false;
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids (a stop id that ended generation is not included)
  std::string text;
  std::string finish_reason;    // "stop" or "length"
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;  // until every rank has the first token (time to first token)
  double decode_seconds = 0;
};

class Generator {
 public:
  // max_context caps the context window (0: the model's). max_kv_rows caps the KV cache each rank
  // may hold (0: no cap); with sequence parallelism a rank holds only its share of a sequence.
  Generator(const LlamaModel& model, const Tokenizer& tokenizer, int64_t max_context = 0,
            int64_t max_kv_rows = 0);
  int64_t context_window() const { return window_; }
  // Tokens per prefill microbatch under pipeline parallelism: 0 (the default) picks two
  // microbatches per stage; a value at least the prompt's length turns microbatching off.
  void set_prefill_microbatch(int64_t tokens) { prefill_microbatch_ = tokens; }
  // on_text receives the text as it is made, at UTF-8 boundaries (and never past a stop string).
  GenerationResult generate(const GenerationRequest& request,
                            const std::function<void(const std::string&)>& on_text = {});
  // Throws if the prompt cannot fit the context window.
  void check_fits(const GenerationRequest& request) const;

 private:
  // The next token from the last row of this rank's logits shard; the same on every TP rank.
  int32_t next_token(Sampler& sampler, const SamplingParams& params, const Tensor& local_logits,
                     const std::vector<int32_t>& history) const;
  int32_t sample_last_stage(Sampler& sampler, const SamplingParams& params,
                            const Tensor& local_logits, const std::vector<int32_t>& history) const;

  const LlamaModel& model_;
  const Tokenizer& tokenizer_;
  int64_t window_;         // prompt + generated tokens never exceed this
  int64_t max_kv_rows_;    // KV rows this rank may hold (0: no cap)
  int64_t prefill_microbatch_ = 0;
  SequenceKvCache cache_;  // grown per request to what it can use, up to window_
};

}  // namespace tessera
