// One request at a time through the engine, with the result on every rank of the replica: the
// simple interface for a prompt on the command line and for tests.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "runtime/engine.h"

namespace tessera {

class Generator {
 public:
  // max_context caps the context window (0: the model's). max_kv_rows is the KV cache each rank
  // holds, in tokens, rounded down to whole blocks (0: the window); with sequence parallelism a
  // rank holds only its share of the sequence.
  Generator(const LlamaModel& model, const Tokenizer& tokenizer, int64_t max_context = 0,
            int64_t max_kv_rows = 0);
  // options.scheduler.num_blocks 0: the whole window. max_sequences is 1.
  Generator(const LlamaModel& model, const Tokenizer& tokenizer, const EngineOptions& options);
  int64_t context_window() const { return engine_->context_window(); }
  // Tokens per prefill chunk under pipeline parallelism (see EngineOptions::prefill_chunk).
  void set_prefill_microbatch(int64_t tokens);
  // Collective over the replica. on_text (called on the leader) receives the text as it is made.
  GenerationResult generate(const GenerationRequest& request,
                            const std::function<void(const std::string&)>& on_text = {});
  void check_fits(const GenerationRequest& request) const { engine_->check_fits(request); }
  const EngineStats& stats() const { return engine_->stats(); }

 private:
  const LlamaModel& model_;
  const Tokenizer& tokenizer_;
  EngineOptions options_;
  std::unique_ptr<Engine> engine_;
};

}  // namespace tessera
