#include "runtime/step_inputs.h"

#include "parallel/sp_split.h"

namespace tessera {

void add_sequence(StepInputs& in, const RankShare& rank, int64_t seq, int64_t position,
                  const std::vector<int32_t>& tokens, int64_t cached_rows,
                  const std::vector<int32_t>& blocks, int64_t logits, bool sample) {
  const int64_t n = int64_t(tokens.size()), bs = rank.block_size;
  TESSERA_ASSERT(n > 0, "sequence " << seq << " has no tokens in the step");
  SequenceRows s;
  s.seq = seq;
  s.first_row = in.rows;
  s.tokens = n;
  s.cached_rows = cached_rows;
  s.blocks = &blocks;
  s.sample = sample;
  s.logits = logits < 0 || logits > n ? n : logits;
  if (sample) s.logits = std::max<int64_t>(s.logits, 1);
  int64_t first_token = 0;  // of `tokens`, this rank's first row's
  s.sp_prompt = rank.sp_size > 1 && position == 0;
  TESSERA_ASSERT(!in.sp_prompt() && (!s.sp_prompt || in.sequences.empty()),
                 "a sequence-parallel prompt is a step of its own");
  if (s.sp_prompt) {
    TESSERA_CHECK(s.logits <= 1, "a sequence-parallel prompt gives the logits of its last token "
                                 "only, not of its last "
                                     << s.logits);
    const Range mine = sp_prompt_chunk(n, rank.sp_size, rank.sp_rank);
    s.rows = mine.size();
    s.position = first_token = mine.begin;
  } else {
    s.rows = n;
    s.position = position;
  }
  // Which rows this rank keeps: all (no SP, or its chunk of an SP prompt), or in SP decode those
  // whose position is its own (position % sp, as the scheduler counts them: parallel/sp_split.h).
  const auto kept = [&](int64_t i) {
    return s.sp_prompt || rank.sp_size == 1 || (s.position + i) % rank.sp_size == rank.sp_rank;
  };
  int64_t keeps = 0;
  for (int64_t i = 0; i < s.rows; ++i) keeps += kept(i);
  s.keep = keeps > 0;
  TESSERA_ASSERT((cached_rows + keeps + bs - 1) / bs <= int64_t(blocks.size()),
                 "sequence " << seq << ": a table of " << blocks.size() << " blocks for "
                             << cached_rows + keeps << " rows");
  int64_t held = cached_rows;  // rows this rank holds once row i is stored
  for (int64_t i = 0; i < s.rows; ++i) {
    in.tokens.push_back(tokens[size_t(first_token + i)]);
    in.positions.push_back(int32_t(s.position + i));
    // New keys and values go after the rows the sequence holds here.
    const bool k = kept(i);
    in.slots.push_back(k ? int64_t(blocks[size_t(held / bs)]) * bs + held % bs : -1);
    held += k;
    // SP decode: each SP rank attends over the positions it keeps, and row i sees those up to
    // its own (a prefix of them: a rank's rows are in position order). Several rows (speculative
    // decoding) see different prefixes: a piece of work per row.
    if (!s.sp_prompt && rank.sp_size > 1)
      in.attention.push_back({s.first_row + i, 1, blocks.data(), held, ops::kAllKeysVisible});
  }
  // Without SP key j of a sequence is its position j: row r sees keys up to its own position.
  if (!s.sp_prompt && rank.sp_size == 1)
    in.attention.push_back({s.first_row, s.rows, blocks.data(), cached_rows + s.rows, s.position});
  in.rows += s.rows;
  in.logits += s.logits;
  in.sequences.push_back(s);
}

void StepInputs::upload(KvPool& pool, int64_t heads, DType q_dtype, int64_t keys_capacity) {
  const Device d = pool.shape().device;
  device.positions = Tensor::from_i32(positions, {rows}).to(d);
  device.slots = Tensor::from_i64(slots, {rows}).to(d);
  if (!attention.empty())
    device.attention =
        ops::prepare_paged_attention(attention, rows, heads, pool.keys(0), keys_capacity, q_dtype);
}

void StepInputs::forget_tables() {
  for (SequenceRows& s : sequences) s.blocks = nullptr;
  for (ops::PagedSequence& a : attention) a.blocks = nullptr;
  for (ops::PagedSequence& a : device.attention.sequences) a.blocks = nullptr;
}

void StepInputs::refill(const StepInputs& other) {
  TESSERA_ASSERT(other.rows == rows && other.attention.size() == attention.size(),
                 "refill of a step's inputs of " << rows << " rows with " << other.rows);
  OnDevice kept = std::move(device);
  *this = other;
  device = std::move(kept);
  Tensor p = Tensor::from_i32(positions, {rows}), s = Tensor::from_i64(slots, {rows});
  ops::copy(p, device.positions);
  ops::copy(s, device.slots);
  ops::refill_paged_attention(device.attention, attention);
}

}  // namespace tessera
