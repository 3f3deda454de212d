// Speculative decoding with a draft model (Leviathan et al. 2023; llama.cpp's --model-draft,
// vLLM's draft_model): a smaller or more coarsely quantized model with the target's tokenizer
// proposes each sequence's next k tokens greedily, one draft step per token; the target checks
// them all in one step. The draft runs whole on the leader (tensor and pipeline parallel of one, as
// vLLM's draft_tensor_parallel_size = 1), on the leader's device, with a KV cache of its own
// that keeps each sequence's draft rows between steps: a step feeds only the tokens the draft
// has not seen (the target's corrections and the accepted proposals' last token), after rolling
// the draft back to where its tokens and the sequence's part.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "parallel/communicator.h"
#include "runtime/llama_model.h"
#include "runtime/model_runner.h"
#include "runtime/proposer.h"

namespace tessera {

// A whole model on one rank, with the communicators (worlds of one) it is built over.
struct DraftModel {
  std::unique_ptr<Communicator> tp, pp;
  std::unique_ptr<LlamaModel> model;
  int64_t vocab = 0;  // it proposes ids below this: its tokenizer's (random: the config's)
  // The model file at `path`, which must have `target`'s tokenizer (throws naming the
  // difference). options.stage_weights and wire are ignored.
  static DraftModel load(const std::string& path, const TokenizerData& target,
                         const LoadOptions& options);
  // Random weights of `config`'s shape (tests, benchmarks).
  static DraftModel random(const ModelConfig& config, uint64_t seed, const LoadOptions& options);
};

// Throws unless the draft model at `path`, whose tokenizer is `draft`, has the target's tokenizer
// (the same tokens, in the same order), naming the first difference.
void check_draft_tokenizer(const std::string& path, const TokenizerData& draft,
                           const TokenizerData& target);

struct DraftOptions {
  int64_t num_blocks = 0;   // KV blocks of the draft's cache (> 0)
  int64_t block_size = 16;  // tokens per block
  DType kv_dtype = DType::kF32;
};

class DraftProposer final : public Proposer {
 public:
  DraftProposer(DraftModel draft, const DraftOptions& options);
  ~DraftProposer() override;
  // The draft's greedy continuation of `tokens`, k tokens (fewer only when its cache cannot hold
  // them even after dropping the draft rows of every sequence not in the same batch).
  std::vector<int32_t> propose(int64_t seq, const std::vector<int32_t>& tokens, int64_t k) override;
  // The same for several sequences, as one batch: a step that feeds each what its draft rows
  // lack, then a step of one row per sequence for each further proposal (while it wants more).
  // A sequence of the batch never loses its rows to another's.
  std::vector<std::vector<int32_t>> propose_all(
      const std::vector<ProposalRequest>& requests) override;
  void release(int64_t seq) override;
  // Draft steps run so far, and positions they computed (for reports and tests).
  int64_t steps() const { return steps_; }
  int64_t positions() const { return positions_; }

 private:
  struct Sequence {
    std::vector<int32_t> fed;     // tokens whose K/V the draft's cache holds, in order
    std::vector<int32_t> blocks;  // its block table in the draft's pool
    uint64_t used = 0;            // when it last proposed (the least recently used goes first)
  };
  // Grows seq's table to hold `rows`, dropping other sequences' rows (least recently used first,
  // none used at `clock_`: this batch's) if the pool is short; false if it cannot.
  bool reserve(int64_t seq, Sequence& s, int64_t rows);
  void drop(int64_t seq);
  // A sequence's part of a draft step: its tokens [from, end) at position `from`.
  struct Feed {
    int64_t seq;
    Sequence* s;
    const std::vector<int32_t>* text;  // what s.fed becomes
    int64_t from;
  };
  // One draft step of every feed; the argmax of the logits after each one's last token.
  std::vector<int32_t> feed(const std::vector<Feed>& feeds);

  DraftModel draft_;
  DraftOptions options_;
  std::unique_ptr<ModelRunner> runner_;
  std::map<int64_t, Sequence> sequences_;
  std::vector<int32_t> free_;  // blocks no sequence holds
  uint64_t clock_ = 0;
  int64_t next_step_ = 1;
  int64_t steps_ = 0, positions_ = 0;
};

}  // namespace tessera
