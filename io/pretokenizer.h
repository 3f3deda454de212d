// Text-level pieces of the tokenizer: UTF-8 decoding, the Unicode character classes of the
// pre-tokenizer regexes, NFC normalization, and the regex pre-tokenizers of byte-level BPE models
// written as hand-made scanners (std::regex has no \p{L}).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// The byte-level pre-tokenizers (TokenizerData::pre).
enum class PreTokenizer {
  kGpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kLlama3,  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
            //  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kQwen2,   // kLlama3 with \p{N} (one digit) instead of \p{N}{1,3}; NFC-normalizes first
  kSmolLM,  // every \p{N} character isolated, then kGpt2 on the rest
};

// "gpt2", "llama3", "qwen2" or "smollm"; anything else fails naming it.
PreTokenizer parse_pre_tokenizer(std::string_view name);

namespace unicode {

// Decodes the UTF-8 sequence at text[pos]; sets len to its byte length (>= 1). A malformed
// sequence decodes as one byte with code point kInvalid.
inline constexpr uint32_t kInvalid = 0xFFFFFFFFu;
uint32_t decode_utf8(std::string_view text, size_t pos, int* len);
void append_utf8(uint32_t cp, std::string* out);

enum class CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };
// \p{L}, \p{N}, \s (White_Space) or none of them.
CharClass char_class(uint32_t cp);

// Unicode Normalization Form C (malformed bytes pass through). is_nfc_quick is a cheap test that
// is true only when nfc cannot change the text (every code point below U+0300).
bool is_nfc_quick(std::string_view text);
std::string nfc(std::string_view text);

// Replaces each malformed UTF-8 sequence by U+FFFD, as Rust's String::from_utf8_lossy does.
std::string to_valid_utf8(std::string_view bytes);
// The length of the longest prefix of bytes that does not end inside a UTF-8 sequence which more
// bytes could still complete.
size_t complete_utf8_prefix(std::string_view bytes);

}  // namespace unicode

// Splits text into pre-tokens (views into text), appending them to out. Does not normalize.
void pre_tokenize(PreTokenizer kind, std::string_view text, std::vector<std::string_view>* out);

}  // namespace tessera
