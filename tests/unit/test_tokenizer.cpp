// Tokenizer unit tests on small hand-checked vocabularies (no Python needed). Parity with Hugging
// Face tokenizers on real and trained vocabularies is tests/reference/tokenizer_parity.py.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <random>

#include "io/pretokenizer.h"
#include "io/tokenizer.h"
#include "kernels/error.h"

namespace tessera {
namespace {

using json = nlohmann::json;
using Ids = std::vector<int32_t>;
const std::string kMark = "\xE2\x96\x81";  // U+2581

std::vector<std::string> split(PreTokenizer kind, std::string_view text) {
  std::vector<std::string_view> views;
  pre_tokenize(kind, text, &views);
  return {views.begin(), views.end()};
}

using Pieces = std::vector<std::string>;

// ---- pre-tokenizers (expected pieces checked against Hugging Face tokenizers) -----------------

TEST(PreTokenizer, Gpt2) {
  const auto k = PreTokenizer::kGpt2;
  EXPECT_EQ(split(k, "Hello world's  test 123 !!"),
            (Pieces{"Hello", " world", "'s", " ", " test", " 123", " !!"}));
  // Contractions are case-sensitive; the last space of a run joins the next word.
  EXPECT_EQ(split(k, "I'M 12345 ok\n\n  x"),
            (Pieces{"I", "'", "M", " 12345", " ok", "\n\n ", " x"}));
  EXPECT_EQ(split(k, "a \u3000b"), (Pieces{"a", " ", "\u3000", "b"}));
  EXPECT_EQ(split(k, "don'T stop\r\n\tgo"), (Pieces{"don", "'", "T", " stop", "\r\n", "\t", "go"}));
  EXPECT_EQ(split(k, "  hi  "), (Pieces{" ", " hi", "  "}));
  EXPECT_EQ(split(k, "\"quoted\" (x)\n"), (Pieces{"\"", "quoted", "\"", " (", "x", ")", "\n"}));
  EXPECT_EQ(split(k, "\u65e5\u672c\u8a9e \u30c6\u30ad"),
            (Pieces{"\u65e5\u672c\u8a9e", " \u30c6\u30ad"}));
  EXPECT_EQ(split(k, "\u00bd\u00b2 x"), (Pieces{"\u00bd\u00b2", " x"}));  // \p{N} beyond ASCII
  EXPECT_TRUE(split(k, "").empty());
}

TEST(PreTokenizer, Llama3) {
  const auto k = PreTokenizer::kLlama3;
  EXPECT_EQ(split(k, "Hello world's  test 123 !!"),
            (Pieces{"Hello", " world", "'s", " ", " test", " ", "123", " !!"}));
  EXPECT_EQ(split(k, "I'M 12345 ok\n\n  x"),
            (Pieces{"I", "'M", " ", "123", "45", " ok", "\n\n", " ", " x"}));
  EXPECT_EQ(split(k, "a \u3000b"), (Pieces{"a", " ", "\u3000b"}));
  EXPECT_EQ(split(k, "don'T stop\r\n\tgo"), (Pieces{"don", "'T", " stop", "\r\n", "\tgo"}));
  EXPECT_EQ(split(k, "\"quoted\" (x)\n"), (Pieces{"\"quoted", "\"", " (", "x", ")\n"}));
  EXPECT_EQ(split(k, "x'\u017f"), (Pieces{"x", "'\u017f"}));  // (?i) folds U+017F to s
}

TEST(PreTokenizer, Qwen2AndSmolLM) {
  EXPECT_EQ(split(PreTokenizer::kQwen2, "I'M 12345 ok"),
            (Pieces{"I", "'M", " ", "1", "2", "3", "4", "5", " ok"}));
  EXPECT_EQ(split(PreTokenizer::kQwen2, "\u00bd\u00b2 x"), (Pieces{"\u00bd", "\u00b2", " x"}));
  EXPECT_EQ(split(PreTokenizer::kSmolLM, "Hello world's  test 123 !!"),
            (Pieces{"Hello", " world", "'s", " ", " test", " ", "1", "2", "3", " !!"}));
  EXPECT_EQ(split(PreTokenizer::kSmolLM, "a 12b"), (Pieces{"a", " ", "1", "2", "b"}));
  EXPECT_EQ(split(PreTokenizer::kSmolLM, "I'M 12345 ok\n\n  x"),
            (Pieces{"I", "'", "M", " ", "1", "2", "3", "4", "5", " ok", "\n\n ", " x"}));
}

TEST(PreTokenizer, MalformedUtf8StaysWhole) {
  const std::string text = "ab\xff\xfe cd\xe4";
  std::string joined;
  for (const auto& p : split(PreTokenizer::kLlama3, text)) joined += p;
  EXPECT_EQ(joined, text);
  EXPECT_THROW(parse_pre_tokenizer("bert"), Error);
}

// ---- unicode helpers ----------------------------------------------------------------------

TEST(Unicode, CharClasses) {
  using unicode::CharClass;
  const auto cls = [](uint32_t cp) { return unicode::char_class(cp); };
  EXPECT_EQ(cls('a'), CharClass::kLetter);
  EXPECT_EQ(cls(0x4E2D), CharClass::kLetter);  // CJK
  EXPECT_EQ(cls(0x01C5), CharClass::kLetter);  // Lt
  EXPECT_EQ(cls('7'), CharClass::kNumber);
  EXPECT_EQ(cls(0x00BD), CharClass::kNumber);  // No
  EXPECT_EQ(cls(0x2167), CharClass::kNumber);  // Nl
  EXPECT_EQ(cls(0x0663), CharClass::kNumber);  // Nd
  for (uint32_t s : {0x09u, 0x0Bu, 0x0Du, 0x20u, 0x85u, 0xA0u, 0x1680u, 0x2000u, 0x200Au, 0x2028u,
                     0x2029u, 0x202Fu, 0x205Fu, 0x3000u})
    EXPECT_EQ(cls(s), CharClass::kSpace) << s;
  EXPECT_EQ(cls(0x200B), CharClass::kOther);  // zero-width space is not White_Space
  EXPECT_EQ(cls(0x180E), CharClass::kOther);
  EXPECT_EQ(cls(0x1C), CharClass::kOther);
  EXPECT_EQ(cls('!'), CharClass::kOther);
  EXPECT_EQ(cls(0x1F600), CharClass::kOther);
  EXPECT_EQ(cls(0x0301), CharClass::kOther);  // combining mark
}

TEST(Unicode, Nfc) {
  EXPECT_EQ(unicode::nfc("cafe\u0301"), "caf\u00e9");
  EXPECT_EQ(unicode::nfc("\u212b"), "\u00c5");               // singleton
  EXPECT_EQ(unicode::nfc("\u1100\u1161\u11a8"), "\uac01");   // Hangul LV + T
  EXPECT_EQ(unicode::nfc("a\u0301\u0323"), "\u1ea1\u0301");  // reordered, then composed
  EXPECT_EQ(unicode::nfc("e\u0301\u0301"), "\u00e9\u0301");  // the second mark is blocked
  EXPECT_EQ(unicode::nfc("\u0344"), "\u0308\u0301");         // excluded from composition
  EXPECT_EQ(unicode::nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(unicode::nfc("\xff\xe4x"), "\xff\xe4x");  // malformed bytes pass through
  EXPECT_TRUE(unicode::is_nfc_quick("abc \u00e9"));
  EXPECT_FALSE(unicode::is_nfc_quick("a\u0301"));
}

TEST(Unicode, Utf8Repair) {
  EXPECT_EQ(unicode::to_valid_utf8("a\xff"
                                   "b"),
            "a\uFFFD"
            "b");
  EXPECT_EQ(unicode::to_valid_utf8("\xe4\xb8"), "\uFFFD");  // one U+FFFD for a cut sequence
  EXPECT_EQ(unicode::to_valid_utf8("\xe4\xb8"
                                   "a"),
            "\uFFFD"
            "a");
  EXPECT_EQ(unicode::to_valid_utf8("\xed\xa0\x80"), "\uFFFD\uFFFD\uFFFD");  // a surrogate
  EXPECT_EQ(unicode::to_valid_utf8("ok \u4e2d"), "ok \u4e2d");
  EXPECT_EQ(unicode::complete_utf8_prefix("ab\xe4\xb8"), 2u);
  EXPECT_EQ(unicode::complete_utf8_prefix("ab\xe4\xb8\xad"), 5u);
  EXPECT_EQ(unicode::complete_utf8_prefix("ab\xf0"), 2u);
  EXPECT_EQ(unicode::complete_utf8_prefix("\xff"), 1u);
  EXPECT_EQ(unicode::complete_utf8_prefix("\xf4\x90"), 2u);  // can never complete
}

// ---- byte-level BPE -----------------------------------------------------------------------

// GPT-2's byte -> character map, written out independently of the tokenizer's.
std::string byte_char(int b) {
  int n = 0;
  for (int x = 0; x < b; ++x)
    if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174)) ++n;
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
  const uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + n);
  std::string s;
  unicode::append_utf8(cp, &s);
  return s;
}

// 256 byte tokens (id = byte), then the merged tokens of `merges` in order.
TokenizerData byte_level(const std::string& pre, const std::vector<std::string>& merges) {
  TokenizerData d;
  d.model = "bpe_byte";
  d.pre = pre;
  for (int b = 0; b < 256; ++b) d.tokens.push_back(byte_char(b));
  for (const auto& m : merges) {
    d.merges.push_back(m);
    const size_t sp = m.find(' ');
    d.tokens.push_back(m.substr(0, sp) + m.substr(sp + 1));
  }
  return d;
}

TEST(ByteLevelBpe, EncodesAndDecodes) {
  const std::string G = byte_char(' ');  // "Ġ"
  Tokenizer tok(byte_level(
      "gpt2", {"h e", "l l", "he ll", "hell o", G + " w", "o r", G + "w or", "l d", G + "wor ld"}));
  EXPECT_EQ(tok.vocab_size(), 265);
  EXPECT_EQ(tok.encode("hello world"), (Ids{259, 264}));
  EXPECT_EQ(tok.encode("hello  world"), (Ids{259, 32, 264}));
  EXPECT_EQ(tok.encode("hello\n"), (Ids{259, 10}));
  EXPECT_EQ(tok.encode(""), Ids{});
  EXPECT_EQ(tok.decode({259, 32, 264}), "hello  world");
  EXPECT_EQ(tok.token_bytes(264), " world");
  EXPECT_EQ(tok.token_bytes(0), std::string(1, '\0'));
  const std::string text = "h\xc3\xa9llo w\xf0\x9f\x98\x80rld\r\n\t";
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
  EXPECT_EQ(tok.token_id(G + "world"), 264);
  EXPECT_FALSE(tok.token_id("nope").has_value());
  EXPECT_EQ(tok.decode({265}), "");  // a padded-vocabulary id has no text
  EXPECT_THROW(tok.decode({-1}), Error);
}

TEST(ByteLevelBpe, MergeRankDecides) {
  // "b c" ranks before "a b": abc -> a + bc. The other order: ab + c.
  Tokenizer bc_first(byte_level("gpt2", {"b c", "a b"}));
  EXPECT_EQ(bc_first.encode("abc"), (Ids{'a', 256}));
  Tokenizer ab_first(byte_level("gpt2", {"a b", "b c"}));
  EXPECT_EQ(ab_first.encode("abc"), (Ids{256, 'c'}));
  // Equal pairs merge leftmost first: aaa -> aa + a; aaaa -> aaaa via aa + aa.
  Tokenizer aa(byte_level("gpt2", {"a a", "aa aa"}));
  EXPECT_EQ(aa.encode("aaa"), (Ids{256, 'a'}));
  EXPECT_EQ(aa.encode("aaaaa"), (Ids{257, 'a'}));
}

TEST(ByteLevelBpe, Llama3IgnoresMergesForWholeWords) {
  // "abc" is a token no merge chain reaches ("a b" then "ab c" is missing): llama3 takes it
  // whole (ignore_merges), gpt2 merges.
  TokenizerData d = byte_level("llama3", {"a b"});
  d.tokens.push_back("abc");
  EXPECT_EQ(Tokenizer(d).encode("abc"), (Ids{257}));
  d.pre = "gpt2";
  EXPECT_EQ(Tokenizer(d).encode("abc"), (Ids{256, 'c'}));
}

TEST(ByteLevelBpe, Qwen2Normalizes) {
  Tokenizer tok(byte_level("qwen2", {}));
  EXPECT_EQ(tok.encode("e\u0301"), (Ids{0xC3, 0xA9}));  // NFC first: U+00E9
  Tokenizer gpt2(byte_level("gpt2", {}));
  EXPECT_EQ(gpt2.encode("e\u0301"), (Ids{'e', 0xCC, 0x81}));
}

TokenizerData chat_vocab() {
  TokenizerData d = byte_level("gpt2", {"h i"});  // "hi" = 256
  d.tokens.push_back("<|im_start|>");             // 257
  d.tokens.push_back("<|im_end|>");               // 258
  d.tokens.push_back("<|im");                     // 259: a shorter control token
  d.tokens.push_back("<tool>");                   // 260: user-defined
  d.token_types.assign(d.tokens.size(), kTokenNormal);
  d.token_types[257] = d.token_types[258] = d.token_types[259] = kTokenControl;
  d.token_types[260] = kTokenUserDefined;
  d.bos_id = 257;
  d.eos_id = 258;
  d.stop_ids = {258};
  return d;
}

TEST(ByteLevelBpe, SpecialTokens) {
  TokenizerData d = chat_vocab();
  Tokenizer tok(d);
  EXPECT_EQ(tok.encode("<|im_start|>hi<|im_end|>"), (Ids{257, 256, 258}));
  EXPECT_EQ(tok.encode("<|imhi"), (Ids{259, 256}));
  EXPECT_EQ(tok.encode("x <tool>hi"), (Ids{'x', ' ', 260, 256}));
  // As text: "<|", "im", "_", "start", "|>" (gpt2 pieces), bytes; user-defined still matched.
  const Ids plain = tok.encode("<|im_start|><tool>", true, false);
  EXPECT_EQ(plain.size(), 13u);
  EXPECT_EQ(plain.back(), 260);
  EXPECT_EQ(tok.decode(plain), "<|im_start|><tool>");
  EXPECT_TRUE(tok.is_special(257));
  EXPECT_FALSE(tok.is_special(260));
  EXPECT_EQ(tok.decode({257, 256, 258}), "<|im_start|>hi<|im_end|>");
  EXPECT_EQ(tok.decode({257, 256, 260, 258}, true), "hi<tool>");
  // BOS / EOS.
  d.add_bos = d.add_eos = true;
  Tokenizer with_bos(d);
  EXPECT_EQ(with_bos.encode("hi"), (Ids{257, 256, 258}));
  EXPECT_EQ(with_bos.encode("hi", false), (Ids{256}));
  EXPECT_EQ(with_bos.encode(""), (Ids{257, 258}));
}

TEST(ByteLevelBpe, TypesDefaultFromSpecialIds) {
  TokenizerData d = chat_vocab();
  d.token_types.clear();  // bos/eos/stop ids become control tokens
  Tokenizer tok(d);
  EXPECT_TRUE(tok.is_special(257));
  EXPECT_EQ(tok.encode("hi<|im_end|>"), (Ids{256, 258}));
  EXPECT_EQ(tok.encode("<tool>").size(), 6u);  // not special any more: plain bytes
}

TEST(ByteLevelBpe, LongInputsAreFast) {
  // One 200k-letter pre-token with a merge chain: O(n log n) BPE.
  Tokenizer tok(byte_level("gpt2", {"a a", "aa aa", "aaaa aaaa", "aaaaaaaa aaaaaaaa"}));
  const auto t0 = std::chrono::steady_clock::now();
  const Ids ids = tok.encode(std::string(200000, 'a'));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ids.size(), 200000u / 16);
  EXPECT_LT(s, 5.0);
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "word" + std::to_string(i) + ", \n";
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
}

TEST(StreamDecoder, HoldsBackPartialCharacters) {
  Tokenizer tok(chat_vocab());
  StreamDecoder dec(tok);
  EXPECT_EQ(dec.push(256), "hi");
  EXPECT_EQ(dec.push(0xE4), "");  // U+4E2D = E4 B8 AD
  EXPECT_EQ(dec.push(0xB8), "");
  EXPECT_EQ(dec.push(257), "");  // control tokens are skipped
  EXPECT_EQ(dec.push(0xAD), "\u4e2d");
  EXPECT_EQ(dec.push(0xF0), "");
  EXPECT_EQ(dec.push('!'), "\uFFFD!");  // a sequence that can no longer complete
  EXPECT_EQ(dec.push(0xC3), "");
  EXPECT_EQ(dec.flush(), "\uFFFD");
  StreamDecoder raw(tok, false);
  EXPECT_EQ(raw.push(257), "<|im_start|>");
}

// ---- SentencePiece-style BPE --------------------------------------------------------------

// <unk> <s> </s>, <0x00>..<0xFF> (3..258), then `extra`.
TokenizerData sp_vocab(const std::vector<std::string>& extra) {
  TokenizerData d;
  d.model = "bpe_sp";
  d.tokens = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    d.tokens.push_back(name);
  }
  for (const auto& t : extra) d.tokens.push_back(t);
  d.token_types.assign(d.tokens.size(), kTokenNormal);
  d.token_types[0] = kTokenUnknown;
  d.token_types[1] = d.token_types[2] = kTokenControl;
  for (int b = 0; b < 256; ++b) d.token_types[size_t(3 + b)] = kTokenByte;
  d.unk_id = 0;
  d.bos_id = 1;
  d.eos_id = 2;
  d.add_bos = true;
  d.add_space_prefix = true;
  return d;
}

TEST(SentencePieceBpe, MergesWithByteFallback) {
  // 259 ▁, 260 h, 261 i, 262 ▁h, 263 ▁hi
  TokenizerData d = sp_vocab({kMark, "h", "i", kMark + "h", kMark + "hi"});
  d.merges = {kMark + " h", kMark + "h i"};
  Tokenizer tok(d);
  EXPECT_EQ(tok.encode("hi hi"), (Ids{1, 263, 263}));
  EXPECT_EQ(tok.encode("h\u00e9"), (Ids{1, 262, 3 + 0xC3, 3 + 0xA9}));  // é: byte fallback
  EXPECT_EQ(tok.encode("hi<s>hi"), (Ids{1, 263, 1, 263}));  // every stretch gets the prefix
  EXPECT_EQ(tok.encode("", true), (Ids{1}));
  EXPECT_EQ(tok.encode(" hi", false), (Ids{259, 263}));
  EXPECT_EQ(tok.decode({1, 263, 263}, true), "hi hi");  // one leading space dropped
  EXPECT_EQ(tok.decode({1, 263, 263}), "<s> hi hi");
  EXPECT_EQ(tok.decode({262, 3 + 0xC3, 3 + 0xA9}), "h\u00e9");
  EXPECT_EQ(tok.token_bytes(3 + 0x41), "A");
  EXPECT_EQ(tok.token_bytes(263), " hi");
  EXPECT_TRUE(tok.is_special(0));  // <unk>
  d.add_space_prefix = false;
  EXPECT_EQ(Tokenizer(d).encode("hi hi", false), (Ids{260, 261, 263}));
}

TEST(SentencePieceBpe, ScoresOrderMergesWithoutMergeList) {
  // 259 ▁, 260 a, 261 b, 262 ▁a, 263 ab; no merges: the higher-scored merged token wins.
  TokenizerData d = sp_vocab({kMark, "a", "b", kMark + "a", "ab"});
  d.scores.assign(d.tokens.size(), 0.0f);
  d.scores[262] = -2.0f;
  d.scores[263] = -1.0f;
  EXPECT_EQ(Tokenizer(d).encode("ab", false), (Ids{259, 263}));
  d.scores[262] = -0.5f;
  EXPECT_EQ(Tokenizer(d).encode("ab", false), (Ids{262, 261}));
  // A character with no token falls back to its bytes after merging.
  EXPECT_EQ(Tokenizer(d).encode("a\u00e9", false), (Ids{262, 3 + 0xC3, 3 + 0xA9}));
}

TEST(SentencePieceBpe, UnknownWithoutByteTokens) {
  TokenizerData d;
  d.model = "bpe_sp";
  d.tokens = {"<unk>", kMark, "a"};
  d.merges = {};
  d.scores = {0, -1, -1};
  d.unk_id = 0;
  EXPECT_EQ(Tokenizer(d).encode("a\u00e9", false), (Ids{2, 0}));
}

// Any byte string, malformed UTF-8 included, encodes to tokens whose bytes give it back.
TEST(Tokenizer, RandomBytesRoundTrip) {
  std::mt19937 rng(42);
  const std::string alphabet = std::string("ab hi\n\r\t'0123456789<|>.") + "\xc3\xa9\xe4\xb8\xad" +
                               "\xf0\x9f\x98\x80\xff\x80\xcc\x81\xe3\x80\x80";
  std::vector<Tokenizer> toks;
  for (const char* pre : {"gpt2", "llama3", "qwen2", "smollm"})
    toks.emplace_back(byte_level(pre, {"h i", "a b", "1 2"}));
  TokenizerData sp = sp_vocab({kMark, "h", "i", kMark + "h", kMark + "hi"});
  sp.merges = {kMark + " h", kMark + "h i"};
  toks.emplace_back(sp);
  sp.merges.clear();
  sp.scores.assign(sp.tokens.size(), -1.0f);
  toks.emplace_back(sp);
  for (int iter = 0; iter < 2000; ++iter) {
    std::string text;
    const int n = int(rng() % 24);
    for (int i = 0; i < n; ++i) text.push_back(alphabet[rng() % alphabet.size()]);
    for (size_t k = 0; k < toks.size(); ++k) {
      const Tokenizer& tok = toks[k];
      const bool is_sp = tok.data().model == "bpe_sp";
      std::string bytes;
      for (int32_t id : tok.encode(text, false, false)) bytes += tok.token_bytes(id);
      std::string want = text;
      if (tok.data().pre == "qwen2") want = unicode::nfc(text);
      if (is_sp && !text.empty()) want = " " + text;
      ASSERT_EQ(bytes, want) << "tokenizer " << k << " text '" << text << "'";
    }
  }
}

// ---- validation and the GGUF name map -----------------------------------------------------

TEST(Tokenizer, RejectsBadData) {
  TokenizerData good = byte_level("gpt2", {"a b"});
  EXPECT_NO_THROW(Tokenizer{good});
  auto bad = [&](auto mutate) {
    TokenizerData d = good;
    mutate(d);
    EXPECT_THROW(Tokenizer{d}, Error);
  };
  bad([](TokenizerData& d) { d.model = "wordpiece"; });
  bad([](TokenizerData& d) { d.pre = "bert"; });
  bad([](TokenizerData& d) { d.scores = {1.0f}; });
  bad([](TokenizerData& d) { d.bos_id = 1000; });
  bad([](TokenizerData& d) { d.add_bos = true; });
  bad([](TokenizerData& d) { d.merges.push_back("a zz"); });
  bad([](TokenizerData& d) { d.merges.push_back("ab"); });
  bad([](TokenizerData& d) { d.tokens.clear(); });
  bad([](TokenizerData& d) { d.token_types.assign(d.tokens.size(), 9); });
}

TEST(Tokenizer, GgufPreNames) {
  EXPECT_EQ(pre_tokenizer_from_gguf("default"), "gpt2");
  EXPECT_EQ(pre_tokenizer_from_gguf("gpt-2"), "gpt2");
  EXPECT_EQ(pre_tokenizer_from_gguf("llama-bpe"), "llama3");
  EXPECT_EQ(pre_tokenizer_from_gguf("llama3"), "llama3");
  EXPECT_EQ(pre_tokenizer_from_gguf("qwen2"), "qwen2");
  EXPECT_EQ(pre_tokenizer_from_gguf("smollm"), "smollm");
  EXPECT_THROW(pre_tokenizer_from_gguf("deepseek-coder"), Error);
}

// ---- Hugging Face tokenizer.json ----------------------------------------------------------

json hf_byte_level(const json& pre_tokenizer) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  vocab["hi"] = 256;
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"h i"}}}},
          {"pre_tokenizer", pre_tokenizer},
          {"added_tokens",
           {{{"id", 257}, {"content", "<|endoftext|>"}, {"special", true}},
            {{"id", 258}, {"content", "<|im_end|>"}, {"special", true}},
            {{"id", 259}, {"content", "<think>"}, {"special", false}}}}};
}

json byte_level_pre(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", use_regex}};
}

json split_pre(const std::string& regex) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"},
             {"pattern", {{"Regex", regex}}},
             {"behavior", "Isolated"},
             {"invert", false}},
            byte_level_pre(false)}}};
}

const char* kLlama3Regex =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

TEST(HuggingFace, ByteLevelVariants) {
  const json config = {{"eos_token", "<|im_end|>"}, {"chat_template", "{{ x }}"}};
  TokenizerData d = tokenizer_data_from_hf(hf_byte_level(byte_level_pre(true)), config);
  EXPECT_EQ(d.model, "bpe_byte");
  EXPECT_EQ(d.pre, "gpt2");
  EXPECT_EQ(d.tokens.size(), 260u);
  EXPECT_EQ(d.merges, (std::vector<std::string>{"h i"}));
  EXPECT_EQ(d.eos_id, 258);
  EXPECT_EQ(d.stop_ids, (Ids{258, 257}));  // eos, then <|endoftext|>
  EXPECT_EQ(d.token_types[257], kTokenControl);
  EXPECT_EQ(d.token_types[259], kTokenUserDefined);
  EXPECT_FALSE(d.add_bos);
  EXPECT_EQ(d.chat_template, "{{ x }}");
  Tokenizer tok(d);
  EXPECT_EQ(tok.encode("hi<think>hi<|im_end|>"), (Ids{256, 259, 256, 258}));

  const json smollm = {
      {"type", "Sequence"},
      {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level_pre(true)}}};
  EXPECT_EQ(tokenizer_data_from_hf(hf_byte_level(smollm), nullptr).pre, "smollm");
  EXPECT_EQ(tokenizer_data_from_hf(hf_byte_level(split_pre(kLlama3Regex)), nullptr).pre, "llama3");
  std::string qwen2 = kLlama3Regex;
  qwen2.replace(qwen2.find("\\p{N}{1,3}"), 10, "\\p{N}");
  json q = hf_byte_level(split_pre(qwen2));
  q["normalizer"] = {{"type", "NFC"}};
  EXPECT_EQ(tokenizer_data_from_hf(q, nullptr).pre, "qwen2");

  // Merges as pairs (newer files) and a BOS template.
  json j = hf_byte_level(split_pre(kLlama3Regex));
  j["model"]["merges"] = json::array({json::array({"h", "i"})});
  j["post_processor"] = json::parse(R"({"type": "Sequence", "processors": [
      {"type": "ByteLevel"},
      {"type": "TemplateProcessing",
       "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                  {"Sequence": {"id": "A", "type_id": 0}}],
       "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [257]}}}]})");
  d = tokenizer_data_from_hf(j, json{{"chat_template",
                                      {{{"name", "tool_use"}, {"template", "T"}},
                                       {{"name", "default"}, {"template", "D"}}}}});
  EXPECT_EQ(d.merges, (std::vector<std::string>{"h i"}));
  EXPECT_TRUE(d.add_bos);
  EXPECT_EQ(d.bos_id, 257);
  EXPECT_EQ(d.chat_template, "D");
  EXPECT_EQ(Tokenizer(d).encode("hi"), (Ids{257, 256}));
}

TEST(HuggingFace, SentencePieceVariants) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"<0x41>", 3}, {kMark, 4}, {"a", 5}};
  json j = {{"model",
             {{"type", "BPE"},
              {"vocab", vocab},
              {"merges", json::array()},
              {"byte_fallback", true},
              {"unk_token", "<unk>"}}},
            {"normalizer",
             {{"type", "Sequence"},
              {"normalizers",
               {{{"type", "Prepend"}, {"prepend", kMark}},
                {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMark}}}}}},
            {"added_tokens",
             {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
              {{"id", 1}, {"content", "<s>"}, {"special", true}},
              {{"id", 2}, {"content", "</s>"}, {"special", true}}}}};
  const json config = {
      {"bos_token", {{"content", "<s>"}}}, {"eos_token", "</s>"}, {"add_bos_token", true}};
  TokenizerData d = tokenizer_data_from_hf(j, config);
  EXPECT_EQ(d.model, "bpe_sp");
  EXPECT_EQ(d.pre, "");
  EXPECT_TRUE(d.add_space_prefix);
  EXPECT_TRUE(d.add_bos);
  EXPECT_EQ(d.bos_id, 1);
  EXPECT_EQ(d.eos_id, 2);
  EXPECT_EQ(d.unk_id, 0);
  EXPECT_EQ(d.token_types[0], kTokenUnknown);
  EXPECT_EQ(d.token_types[3], kTokenByte);
  EXPECT_EQ(Tokenizer(d).encode("aA"), (Ids{1, 4, 5, 3}));

  json meta = j;
  meta["normalizer"] = nullptr;
  meta["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", kMark}, {"prepend_scheme", "never"}};
  EXPECT_FALSE(tokenizer_data_from_hf(meta, nullptr).add_space_prefix);
  meta["pre_tokenizer"]["prepend_scheme"] = "always";
  EXPECT_TRUE(tokenizer_data_from_hf(meta, nullptr).add_space_prefix);
}

TEST(HuggingFace, RejectsWhatItDoesNotUnderstand) {
  const auto message = [](const json& j) -> std::string {
    try {
      tokenizer_data_from_hf(j, nullptr);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message(hf_byte_level({{"type", "Whitespace"}})).find("pre_tokenizer"),
            std::string::npos);
  EXPECT_NE(message(hf_byte_level(split_pre("\\w+"))).find("pre_tokenizer"), std::string::npos);
  json j = hf_byte_level(byte_level_pre(true));
  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_NE(message(j).find("normalizer"), std::string::npos);
  j = hf_byte_level(byte_level_pre(true));
  j["model"]["type"] = "WordPiece";
  EXPECT_NE(message(j).find("WordPiece"), std::string::npos);
  j = hf_byte_level(byte_level_pre(true));
  j["post_processor"] = {{"type", "RobertaProcessing"}};
  EXPECT_NE(message(j).find("post_processor"), std::string::npos);
  j = hf_byte_level(byte_level_pre(true));
  j["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_NE(message(j).find("add_prefix_space"), std::string::npos);
}

}  // namespace
}  // namespace tessera
