// The tokenizer: byte-level BPE (GPT-2 style, with the GPT-2 / Llama-3 / Qwen2 / SmolLM
// pre-tokenizers) and SentencePiece-style BPE with byte fallback, encoding and decoding as Hugging
// Face tokenizers does for the same tokenizer.json.
//
// Encoding: the text is split on special-token text (longest match first), each remaining stretch
// is normalized (bpe_sp: U+2581 for spaces and an optional U+2581 prefix; qwen2: NFC), split into
// pre-tokens (bpe_byte), and every pre-token is merged by BPE on its own.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// GGUF token types (tokenizer.ggml.token_type).
enum TokenType : int32_t {
  kTokenNormal = 1,
  kTokenUnknown = 2,
  kTokenControl = 3,
  kTokenUserDefined = 4,
  kTokenUnused = 5,
  kTokenByte = 6,
};

struct TokenizerData {  // exactly what the model file stores under /tokenizer
  // "bpe_byte" (GPT-2 style byte-level BPE) or "bpe_sp" (SentencePiece-style BPE with byte
  // fallback; tokens use U+2581 for space).
  std::string model;
  // byte-level pre-tokenizer: "gpt2", "llama3", "qwen2", "smollm" (individual digits, then gpt2);
  // "" for bpe_sp.
  std::string pre;
  // id -> token text as the source stores it (byte-level tokens use the GPT-2 byte->unicode map).
  std::vector<std::string> tokens;
  std::vector<float> scores;  // optional (SentencePiece scores); empty if absent
  // GGUF convention (TokenType); empty = all normal, except that bos/eos/pad/stop ids then count
  // as control tokens, unk_id as unknown and (bpe_sp) <0xNN> tokens as bytes.
  std::vector<int32_t> token_types;
  // "left right" in priority order. May be empty for bpe_sp with scores: merge priority is then
  // the score of the merged token, higher first, as SentencePiece and llama.cpp do.
  std::vector<std::string> merges;
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;
  std::vector<int32_t> stop_ids;  // end-of-generation ids (<|eot_id|>, <|im_end|>...), eos included
  bool add_bos = false, add_eos = false;
  bool add_space_prefix = false;  // bpe_sp: prepend U+2581 to the text (Llama-2 style)
  std::string chat_template;      // Jinja source, may be empty
};

class Tokenizer {
 public:
  // Validates data (ids in range, merges naming known tokens...); fails naming what is wrong.
  explicit Tokenizer(TokenizerData data);

  // add_special: prepend BOS / append EOS where the data asks for them.
  // parse_special: text equal to a control (or unknown) token becomes that id, as Hugging Face
  // does for added special tokens. User-defined tokens (non-special added tokens) are always
  // matched, as Hugging Face and llama.cpp do.
  std::vector<int32_t> encode(std::string_view text, bool add_special = true,
                              bool parse_special = true) const;
  // Concatenates token_bytes, skipping special tokens when skip_special, and replaces malformed
  // UTF-8 with U+FFFD. bpe_sp with add_space_prefix drops one leading space (Hugging Face's Strip).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // The raw bytes a token stands for: byte-level decoding, U+2581 -> space, <0xNN> -> the byte;
  // control and user-defined tokens stand for their text; ids past the vocabulary (rows a model
  // pads its embedding with) stand for no text. A negative id throws.
  std::string token_bytes(int32_t id) const;
  int32_t vocab_size() const;
  const TokenizerData& data() const;
  // A control token (BOS, EOS, <|im_start|>...) or the unknown token: what Hugging Face calls a
  // special token, skipped by decode(skip_special).
  bool is_special(int32_t id) const;
  std::optional<int32_t> token_id(std::string_view token_text) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;  // immutable: copies share it, and encode is thread-safe
};

// Streams text as ids arrive, emitting only complete UTF-8 sequences (holds back a partial
// multi-byte character until the next token completes it). Special tokens are skipped unless
// skip_special is false. Unlike decode(), a leading space is never dropped.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = true);
  std::string push(int32_t id);
  std::string flush();  // whatever is held back (malformed bytes become U+FFFD)

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

// From a Hugging Face tokenizer.json (+ tokenizer_config.json for bos/eos/add_bos/chat_template;
// may be a null json). Fails naming the part of the file it does not understand.
// A byte-level tokenizer with `vocab` ids and no merges, for models without one of their own
// (LlamaModel::random): ids 0-255 are the bytes, id >= 256 the three bytes of its number; no
// stop ids.
TokenizerData stand_in_tokenizer(int64_t vocab);

TokenizerData tokenizer_data_from_hf(const nlohmann::json& tokenizer_json,
                                     const nlohmann::json& tokenizer_config);

// llama.cpp's tokenizer.ggml.pre names -> TokenizerData::pre ("default"/"gpt-2" -> gpt2,
// "llama-bpe"/"llama3" -> llama3, "qwen2" -> qwen2, "smollm" -> smollm); fails on others.
std::string pre_tokenizer_from_gguf(std::string_view gguf_pre);

}  // namespace tessera
