#include "io/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <queue>
#include <unordered_map>

#include "io/pretokenizer.h"
#include "kernels/error.h"

namespace tessera {

namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// GPT-2's byte -> code point map: printable Latin-1 bytes stand for themselves, the others are
// shifted to U+0100 and up, so every byte has a visible, non-space character.
struct ByteMap {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 512> to_byte{};  // code point -> byte, -1 for none
  ByteMap() {
    to_byte.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_cp[size_t(b)] = printable ? uint32_t(b) : next++;
      to_byte[to_cp[size_t(b)]] = int16_t(b);
    }
  }
};
const ByteMap kByteMap;

// "<0xNN>" -> NN, or -1.
int byte_token_value(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  int v = 0;
  for (char c : t.substr(3, 2)) {
    v *= 16;
    if (c >= '0' && c <= '9') {
      v += c - '0';
    } else if (c >= 'A' && c <= 'F') {
      v += c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      v += c - 'a' + 10;
    } else {
      return -1;
    }
  }
  return v;
}

struct TextHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};

struct Symbol {
  int32_t id;  // -1: a character with no token (bpe_sp with scores: resolved by byte fallback)
  uint32_t start, len;
  int32_t prev, next;
};

struct Candidate {
  double priority;  // lower merges first: the merge rank, or minus the merged token's score
  int32_t left, right;
  uint32_t left_len, right_len;  // the symbols' lengths when queued; a change means it is stale
  int32_t new_id;
  bool operator<(const Candidate& o) const {  // std::priority_queue pops the largest
    if (priority != o.priority) return priority > o.priority;
    return left > o.left;
  }
};

struct SpecialToken {
  std::string text;
  int32_t id;
  bool always;  // user-defined: matched even when parse_special is off
};

}  // namespace

struct Tokenizer::Impl {
  TokenizerData data;
  bool byte_level = false;
  PreTokenizer pre = PreTokenizer::kGpt2;
  bool use_scores = false;         // bpe_sp with scores but no merges: SentencePiece score order
  std::vector<int32_t> type;       // effective TokenType of each id
  std::vector<std::string> bytes;  // token_bytes of each id
  std::unordered_map<std::string, int32_t, TextHash, std::equal_to<>> text_to_id;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (l, r) -> (rank, merged)
  std::array<int32_t, 256> byte_token{};  // bpe_byte: the token of a byte; bpe_sp: <0xNN>
  std::array<std::vector<SpecialToken>, 256> specials;  // by first byte, longest first

  explicit Impl(TokenizerData d);
  void validate() const;
  void build_types();
  void build_merges();
  void build_bytes();
  int32_t find(std::string_view text) const {
    auto it = text_to_id.find(text);
    return it == text_to_id.end() ? -1 : it->second;
  }
  // The special token matching text at pos (longest), or nullptr.
  const SpecialToken* match_special(std::string_view text, size_t pos, bool parse_special) const;
  void encode_stretch(std::string_view text, std::vector<int32_t>* out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>* out) const;
  void push_byte(uint8_t b, std::vector<int32_t>* out) const;
  void bpe(std::string_view word, std::vector<Symbol>* syms, std::vector<int32_t>* out) const;
};

Tokenizer::Impl::Impl(TokenizerData d) : data(std::move(d)) {
  validate();
  byte_level = data.model == "bpe_byte";
  if (byte_level) pre = parse_pre_tokenizer(data.pre);
  use_scores = !byte_level && data.merges.empty() && !data.scores.empty();
  const int32_t n = int32_t(data.tokens.size());
  text_to_id.reserve(size_t(n));
  for (int32_t id = 0; id < n; ++id) text_to_id.emplace(data.tokens[size_t(id)], id);
  build_types();
  build_merges();
  build_bytes();
}

void Tokenizer::Impl::validate() const {
  const TokenizerData& t = data;
  TESSERA_CHECK(t.model == "bpe_byte" || t.model == "bpe_sp",
                "unknown tokenizer model '" << t.model << "' (known: bpe_byte, bpe_sp)");
  TESSERA_CHECK(t.model == "bpe_byte" || t.pre.empty(),
                "a bpe_sp tokenizer takes no pre-tokenizer, got '" << t.pre << "'");
  TESSERA_CHECK(!t.tokens.empty(), "the tokenizer's vocabulary is empty");
  TESSERA_CHECK(t.tokens.size() < size_t(INT32_MAX), "the vocabulary is too large");
  const size_t n = t.tokens.size();
  TESSERA_CHECK(t.scores.empty() || t.scores.size() == n,
                "the tokenizer has " << t.scores.size() << " scores for " << n << " tokens");
  TESSERA_CHECK(
      t.token_types.empty() || t.token_types.size() == n,
      "the tokenizer has " << t.token_types.size() << " token types for " << n << " tokens");
  for (size_t i = 0; i < t.token_types.size(); ++i)
    TESSERA_CHECK(t.token_types[i] >= 0 && t.token_types[i] <= 6,
                  "token " << i << " has unknown token type " << t.token_types[i]);
  const auto check_id = [&](int32_t id, const char* what) {
    TESSERA_CHECK(id >= -1 && id < int32_t(n),
                  "the tokenizer's " << what << " " << id << " is outside the vocabulary of " << n);
  };
  check_id(t.bos_id, "bos_id");
  check_id(t.eos_id, "eos_id");
  check_id(t.unk_id, "unk_id");
  check_id(t.pad_id, "pad_id");
  for (int32_t id : t.stop_ids) {
    check_id(id, "stop id");
    TESSERA_CHECK(id >= 0, "the tokenizer's stop ids include -1");
  }
  TESSERA_CHECK(!t.add_bos || t.bos_id >= 0, "the tokenizer adds BOS but has no bos_id");
  TESSERA_CHECK(!t.add_eos || t.eos_id >= 0, "the tokenizer adds EOS but has no eos_id");
}

void Tokenizer::Impl::build_types() {
  const size_t n = data.tokens.size();
  if (!data.token_types.empty()) {
    type = data.token_types;
    for (auto& t : type)
      if (t == 0) t = kTokenNormal;  // GGUF's "undefined"
  } else {
    type.assign(n, kTokenNormal);
    if (!byte_level)
      for (size_t i = 0; i < n; ++i)
        if (byte_token_value(data.tokens[i]) >= 0) type[i] = kTokenByte;
    for (int32_t id : {data.bos_id, data.eos_id, data.pad_id})
      if (id >= 0) type[size_t(id)] = kTokenControl;
    for (int32_t id : data.stop_ids) type[size_t(id)] = kTokenControl;
    if (data.unk_id >= 0) type[size_t(data.unk_id)] = kTokenUnknown;
  }
  for (size_t i = 0; i < n; ++i) {
    const int32_t t = type[i];
    const std::string& text = data.tokens[i];
    if (text.empty() || (t != kTokenControl && t != kTokenUnknown && t != kTokenUserDefined))
      continue;
    specials[uint8_t(text[0])].push_back({text, int32_t(i), t == kTokenUserDefined});
  }
  for (auto& bucket : specials)
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const auto& a, const auto& b) { return a.text.size() > b.text.size(); });
}

void Tokenizer::Impl::build_merges() {
  merges.reserve(data.merges.size());
  for (size_t rank = 0; rank < data.merges.size(); ++rank) {
    const std::string& m = data.merges[rank];
    bool ok = false;
    for (size_t sp = m.find(' '); sp != std::string::npos && !ok; sp = m.find(' ', sp + 1)) {
      const int32_t l = find(std::string_view(m).substr(0, sp));
      const int32_t r = find(std::string_view(m).substr(sp + 1));
      if (l < 0 || r < 0) continue;
      const int32_t merged = find(m.substr(0, sp) + m.substr(sp + 1));
      if (merged < 0) continue;
      merges[(uint64_t(uint32_t(l)) << 32) | uint32_t(r)] = {int32_t(rank), merged};
      ok = true;
    }
    TESSERA_CHECK(ok, "tokenizer merge " << rank << " '" << m
                                         << "' does not name two tokens whose concatenation "
                                            "is a token");
  }
}

void Tokenizer::Impl::build_bytes() {
  const size_t n = data.tokens.size();
  byte_token.fill(-1);
  bytes.resize(n);
  if (byte_level) {
    for (int b = 0; b < 256; ++b) {
      std::string s;
      unicode::append_utf8(kByteMap.to_cp[size_t(b)], &s);
      byte_token[size_t(b)] = find(s);
    }
    // Hugging Face's ByteLevel decoder: map every character back to its byte, or keep the text
    // when one of them is not in the map (e.g. an added token with a real space).
    for (size_t i = 0; i < n; ++i) {
      const std::string& t = data.tokens[i];
      std::string out;
      bool mapped = true;
      for (size_t pos = 0; pos < t.size() && mapped;) {
        int len;
        const uint32_t cp = unicode::decode_utf8(t, pos, &len);
        mapped = cp < 512 && kByteMap.to_byte[cp] >= 0;
        if (mapped) out.push_back(char(kByteMap.to_byte[cp]));
        pos += size_t(len);
      }
      bytes[i] = mapped ? out : t;
    }
    return;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    byte_token[size_t(b)] = find(name);
  }
  for (size_t i = 0; i < n; ++i) {
    const std::string& t = data.tokens[i];
    const int v = byte_token_value(t);
    if (type[i] == kTokenControl || type[i] == kTokenUnknown) {
      bytes[i] = t;
    } else if (v >= 0 && (type[i] == kTokenByte || type[i] == kTokenNormal)) {
      bytes[i] = std::string(1, char(v));
    } else {
      std::string out;
      for (size_t pos = 0; pos < t.size();) {
        if (t.compare(pos, kSpaceMark.size(), kSpaceMark) == 0) {
          out.push_back(' ');
          pos += kSpaceMark.size();
        } else {
          out.push_back(t[pos++]);
        }
      }
      bytes[i] = std::move(out);
    }
  }
}

const SpecialToken* Tokenizer::Impl::match_special(std::string_view text, size_t pos,
                                                   bool parse_special) const {
  for (const SpecialToken& s : specials[uint8_t(text[pos])])
    if ((parse_special || s.always) && text.compare(pos, s.text.size(), s.text) == 0) return &s;
  return nullptr;
}

void Tokenizer::Impl::push_byte(uint8_t b, std::vector<int32_t>* out) const {
  int32_t id = byte_token[b];
  if (id < 0) id = data.unk_id;
  char hex[8];
  std::snprintf(hex, sizeof(hex), "0x%02X", unsigned(b));
  TESSERA_CHECK(id >= 0, "the tokenizer has no token for byte " << hex << " and no unknown token");
  out->push_back(id);
}

void Tokenizer::Impl::bpe(std::string_view word, std::vector<Symbol>* symbols,
                          std::vector<int32_t>* out) const {
  std::vector<Symbol>& syms = *symbols;
  const int32_t n = int32_t(syms.size());
  for (int32_t i = 0; i < n; ++i) {
    syms[size_t(i)].prev = i - 1;
    syms[size_t(i)].next = i + 1 < n ? i + 1 : -1;
  }
  std::vector<Candidate> storage;
  storage.reserve(size_t(n));
  std::priority_queue<Candidate> queue(std::less<Candidate>(), std::move(storage));
  const auto try_pair = [&](int32_t l, int32_t r) {
    const Symbol& a = syms[size_t(l)];
    const Symbol& b = syms[size_t(r)];
    if (use_scores) {
      const int32_t id = find(word.substr(a.start, a.len + b.len));
      if (id >= 0) queue.push({-double(data.scores[size_t(id)]), l, r, a.len, b.len, id});
      return;
    }
    if (a.id < 0 || b.id < 0) return;
    auto it = merges.find((uint64_t(uint32_t(a.id)) << 32) | uint32_t(b.id));
    if (it != merges.end())
      queue.push({double(it->second.first), l, r, a.len, b.len, it->second.second});
  };
  for (int32_t i = 0; i + 1 < n; ++i) try_pair(i, i + 1);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& a = syms[size_t(c.left)];
    Symbol& b = syms[size_t(c.right)];
    if (a.len == 0 || a.next != c.right || a.len != c.left_len || b.len != c.right_len) continue;
    a.len += b.len;
    a.id = c.new_id;
    a.next = b.next;
    if (b.next >= 0) syms[size_t(b.next)].prev = c.left;
    b.len = 0;
    if (a.prev >= 0) try_pair(a.prev, c.left);
    if (a.next >= 0) try_pair(c.left, a.next);
  }
  for (int32_t i = 0; i >= 0 && n > 0; i = syms[size_t(i)].next) {
    const Symbol& s = syms[size_t(i)];
    bool bytes_known = true;
    for (uint32_t k = 0; k < s.len && s.id < 0; ++k)
      bytes_known = bytes_known && byte_token[uint8_t(word[s.start + k])] >= 0;
    if (s.id >= 0) {
      out->push_back(s.id);
    } else if (bytes_known || data.unk_id < 0) {
      for (uint32_t k = 0; k < s.len; ++k) push_byte(uint8_t(word[s.start + k]), out);
    } else {
      out->push_back(data.unk_id);  // a character with neither a token nor byte tokens
    }
  }
}

void Tokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>* out) const {
  std::vector<Symbol> syms;
  if (byte_level) {
    if (piece.size() == 1) return push_byte(uint8_t(piece[0]), out);
    if (pre == PreTokenizer::kLlama3) {
      // Llama-3's tokenizer.json sets ignore_merges: a pre-token in the vocabulary is one token.
      std::string mapped;
      for (char c : piece) unicode::append_utf8(kByteMap.to_cp[uint8_t(c)], &mapped);
      if (const int32_t id = find(mapped); id >= 0) return out->push_back(id);
    }
    syms.reserve(piece.size());
    for (size_t i = 0; i < piece.size(); ++i) {
      int32_t id = byte_token[uint8_t(piece[i])];
      if (id < 0) {
        std::vector<int32_t> one;
        push_byte(uint8_t(piece[i]), &one);  // the unknown token, or a failure
        id = one[0];
      }
      syms.push_back({id, uint32_t(i), 1, 0, 0});
    }
    return bpe(piece, &syms, out);
  }
  // bpe_sp: characters; one that is not a token becomes its bytes' <0xNN> tokens (merges) or is
  // resolved after merging (scores, as llama.cpp).
  syms.reserve(piece.size());
  bool last_unk = false;
  for (size_t pos = 0; pos < piece.size();) {
    int len;
    unicode::decode_utf8(piece, pos, &len);
    const int32_t id = find(piece.substr(pos, size_t(len)));
    if (id >= 0 || use_scores) {
      syms.push_back({id, uint32_t(pos), uint32_t(len), 0, 0});
    } else {
      bool have_all = true;
      for (int k = 0; k < len; ++k) have_all = have_all && byte_token[uint8_t(piece[pos + k])] >= 0;
      if (have_all) {
        for (int k = 0; k < len; ++k)
          syms.push_back({byte_token[uint8_t(piece[pos + k])], uint32_t(pos + k), 1, 0, 0});
      } else {
        TESSERA_CHECK(data.unk_id >= 0, "the tokenizer cannot encode '"
                                            << piece.substr(pos, size_t(len))
                                            << "': no byte tokens and no unknown token");
        // Consecutive unknown characters fuse into one unknown token (fuse_unk).
        if (last_unk) {
          syms.back().len += uint32_t(len);
        } else {
          syms.push_back({data.unk_id, uint32_t(pos), uint32_t(len), 0, 0});
        }
        last_unk = true;
        pos += size_t(len);
        continue;
      }
    }
    last_unk = false;
    pos += size_t(len);
  }
  bpe(piece, &syms, out);
}

void Tokenizer::Impl::encode_stretch(std::string_view text, std::vector<int32_t>* out) const {
  if (text.empty()) return;
  if (!byte_level) {
    std::string norm;
    norm.reserve(text.size() + text.size() / 2 + 3);
    if (data.add_space_prefix) norm.append(kSpaceMark);
    for (char c : text) {
      if (c == ' ') {
        norm.append(kSpaceMark);
      } else {
        norm.push_back(c);
      }
    }
    return encode_piece(norm, out);
  }
  std::string normalized;
  if (pre == PreTokenizer::kQwen2 && !unicode::is_nfc_quick(text)) {
    normalized = unicode::nfc(text);
    text = normalized;
  }
  std::vector<std::string_view> pieces;
  pre_tokenize(pre, text, &pieces);
  for (std::string_view p : pieces) encode_piece(p, out);
}

TokenizerData stand_in_tokenizer(int64_t vocab) {
  TESSERA_CHECK(vocab >= 256 && vocab < (int64_t(1) << 24),
                "a stand-in tokenizer needs 256 to 2^24 ids, not " << vocab);
  TokenizerData d;
  d.model = "bpe_byte";
  d.pre = "gpt2";
  for (int64_t id = 0; id < vocab; ++id) {
    std::string t;
    if (id < 256) {
      unicode::append_utf8(kByteMap.to_cp[size_t(id)], &t);
    } else {
      for (const int64_t shift : {16, 8, 0})
        unicode::append_utf8(kByteMap.to_cp[size_t((id >> shift) & 255)], &t);
    }
    d.tokens.push_back(std::move(t));
  }
  return d;
}

Tokenizer::Tokenizer(TokenizerData data) : impl_(std::make_shared<const Impl>(std::move(data))) {}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special && m.data.add_bos) out.push_back(m.data.bos_id);
  size_t start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const SpecialToken* s = m.match_special(text, pos, parse_special);
    if (!s) {
      ++pos;
      continue;
    }
    m.encode_stretch(text.substr(start, pos - start), &out);
    out.push_back(s->id);
    pos += s->text.size();
    start = pos;
  }
  m.encode_stretch(text.substr(start), &out);
  if (add_special && m.data.add_eos) out.push_back(m.data.eos_id);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (skip_special && is_special(id)) continue;
    out += token_bytes(id);
  }
  if (!impl_->byte_level && impl_->data.add_space_prefix && !out.empty() && out[0] == ' ')
    out.erase(0, 1);
  return unicode::to_valid_utf8(out);
}

std::string Tokenizer::token_bytes(int32_t id) const {
  TESSERA_CHECK(id >= 0, "token id " << id << " is negative");
  // Models often pad their embedding past the tokenizer's vocabulary (to a multiple of 64 or
  // 128): such rows have no text, as in Hugging Face's decode.
  if (id >= vocab_size()) return "";
  return impl_->bytes[size_t(id)];
}

int32_t Tokenizer::vocab_size() const {
  return int32_t(impl_->data.tokens.size());
}
const TokenizerData& Tokenizer::data() const {
  return impl_->data;
}

bool Tokenizer::is_special(int32_t id) const {
  TESSERA_CHECK(id >= 0, "token id " << id << " is negative");
  if (id >= vocab_size()) return false;
  const int32_t t = impl_->type[size_t(id)];
  return t == kTokenControl || t == kTokenUnknown;
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token_text) const {
  const int32_t id = impl_->find(token_text);
  if (id < 0) return std::nullopt;
  return id;
}

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  if (skip_special_ && tokenizer_.is_special(id)) return "";
  pending_ += tokenizer_.token_bytes(id);
  const size_t n = unicode::complete_utf8_prefix(pending_);
  std::string out = unicode::to_valid_utf8(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = unicode::to_valid_utf8(pending_);
  pending_.clear();
  return out;
}

std::string pre_tokenizer_from_gguf(std::string_view gguf_pre) {
  if (gguf_pre == "default" || gguf_pre == "gpt-2" || gguf_pre == "gpt2") return "gpt2";
  if (gguf_pre == "llama-bpe" || gguf_pre == "llama3") return "llama3";
  if (gguf_pre == "qwen2") return "qwen2";
  if (gguf_pre == "smollm") return "smollm";
  TESSERA_FAIL("unsupported GGUF pre-tokenizer '"
               << gguf_pre
               << "' (tokenizer.ggml.pre; supported: default, gpt-2, llama-bpe, llama3, qwen2, "
                  "smollm)");
}

}  // namespace tessera
