#include "io/pretokenizer.h"

#include <algorithm>

#include "io/unicode_tables.h"
#include "kernels/error.h"

namespace tessera {

PreTokenizer parse_pre_tokenizer(std::string_view name) {
  if (name == "gpt2") return PreTokenizer::kGpt2;
  if (name == "llama3") return PreTokenizer::kLlama3;
  if (name == "qwen2") return PreTokenizer::kQwen2;
  if (name == "smollm") return PreTokenizer::kSmolLM;
  TESSERA_FAIL("unknown byte-level pre-tokenizer '" << name
                                                    << "' (known: gpt2, llama3, qwen2, smollm)");
}

namespace unicode {

namespace {

// Length of the sequence that a lead byte starts; 0 when the byte cannot start one.
int sequence_length(uint8_t b0) {
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) return 2;
  if (b0 >= 0xE0 && b0 <= 0xEF) return 3;
  if (b0 >= 0xF0 && b0 <= 0xF4) return 4;
  return 0;
}

// Whether byte k (>= 1) of a sequence led by b0 may be c (no overlongs, surrogates, > U+10FFFF).
bool continuation_ok(uint8_t b0, size_t k, uint8_t c) {
  uint8_t lo = 0x80, hi = 0xBF;
  if (k == 1) {
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  }
  return c >= lo && c <= hi;
}

// Whether s, shorter than the sequence its first byte starts, is a prefix of a valid sequence.
bool is_partial_sequence(std::string_view s) {
  const uint8_t b0 = uint8_t(s[0]);
  if (sequence_length(b0) <= int(s.size())) return false;
  for (size_t k = 1; k < s.size(); ++k)
    if (!continuation_ok(b0, k, uint8_t(s[k]))) return false;
  return true;
}

}  // namespace

uint32_t decode_utf8(std::string_view text, size_t pos, int* len) {
  const uint8_t b0 = uint8_t(text[pos]);
  *len = 1;
  if (b0 < 0x80) return b0;
  const int n = sequence_length(b0);
  if (n == 0 || pos + size_t(n) > text.size()) return kInvalid;
  uint32_t cp = b0 & (0x7F >> n);
  for (int k = 1; k < n; ++k) {
    const uint8_t c = uint8_t(text[pos + size_t(k)]);
    if (!continuation_ok(b0, size_t(k), c)) return kInvalid;
    cp = (cp << 6) | (c & 0x3F);
  }
  *len = n;
  return cp;
}

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(char(cp));
  } else if (cp < 0x800) {
    out->push_back(char(0xC0 | (cp >> 6)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(char(0xE0 | (cp >> 12)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(char(0xF0 | (cp >> 18)));
    out->push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  }
}

namespace {

struct AsciiClasses {
  CharClass cls[128];
  AsciiClasses() {
    for (int c = 0; c < 128; ++c) {
      cls[c] = CharClass::kOther;
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) cls[c] = CharClass::kLetter;
      if (c >= '0' && c <= '9') cls[c] = CharClass::kNumber;
      if (c == ' ' || (c >= 0x09 && c <= 0x0D)) cls[c] = CharClass::kSpace;
    }
  }
};
const AsciiClasses kAscii;

}  // namespace

CharClass char_class(uint32_t cp) {
  if (cp < 128) return kAscii.cls[cp];
  using unicode_data::kClassRanges;
  const auto* end = kClassRanges + unicode_data::kNumClassRanges;
  const auto* it =
      std::upper_bound(kClassRanges, end, cp, [](uint32_t v, const auto& r) { return v < r.lo; });
  if (it == kClassRanges) return CharClass::kOther;
  --it;
  return cp <= it->hi ? CharClass(it->cls) : CharClass::kOther;
}

// ---- NFC ------------------------------------------------------------------------------------

namespace {

constexpr uint32_t kRawByte = 0x80000000u;  // marks a malformed input byte kept as it is
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

uint8_t combining_class(uint32_t cp) {
  if (cp < 0x300 || (cp & kRawByte)) return 0;
  using unicode_data::kCccRanges;
  const auto* end = kCccRanges + unicode_data::kNumCccRanges;
  const auto* it =
      std::upper_bound(kCccRanges, end, cp, [](uint32_t v, const auto& r) { return v < r.lo; });
  if (it == kCccRanges) return 0;
  --it;
  return cp <= it->hi ? it->ccc : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= 0xC0 && !(cp & kRawByte)) {
    using unicode_data::kDecompositions;
    const auto* end = kDecompositions + unicode_data::kNumDecompositions;
    const auto* it = std::lower_bound(kDecompositions, end, cp,
                                      [](const auto& d, uint32_t v) { return d.cp < v; });
    if (it != end && it->cp == cp) {
      decompose(it->first, out);
      if (it->second != 0) decompose(it->second, out);
      return;
    }
  }
  out->push_back(cp);
}

uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  if ((a | b) & kRawByte) return 0;
  using unicode_data::kCompositions;
  const auto* end = kCompositions + unicode_data::kNumCompositions;
  const auto* it = std::lower_bound(kCompositions, end, std::pair(a, b), [](const auto& c, auto v) {
    return c.first < v.first || (c.first == v.first && c.second < v.second);
  });
  return (it != end && it->first == a && it->second == b) ? it->composed : 0;
}

}  // namespace

bool is_nfc_quick(std::string_view text) {
  // Every code point below U+0300 is NFC-stable and composes with nothing before it.
  for (char c : text)
    if (uint8_t(c) >= 0xCC) return false;
  return true;
}

std::string nfc(std::string_view text) {
  if (is_nfc_quick(text)) return std::string(text);
  std::vector<uint32_t> buf;
  buf.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    int len;
    const uint32_t cp = decode_utf8(text, pos, &len);
    if (cp == kInvalid) {
      buf.push_back(kRawByte | uint8_t(text[pos]));
    } else {
      decompose(cp, &buf);
    }
    pos += size_t(len);
  }
  // Canonical ordering: stable-sort every run of non-starters by combining class.
  for (size_t i = 0; i < buf.size();) {
    if (combining_class(buf[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < buf.size() && combining_class(buf[j]) != 0) ++j;
    std::stable_sort(buf.begin() + i, buf.begin() + j, [](uint32_t x, uint32_t y) {
      return combining_class(x) < combining_class(y);
    });
    i = j;
  }
  // Canonical composition.
  std::vector<uint32_t> res;
  res.reserve(buf.size());
  size_t starter = SIZE_MAX;
  uint8_t last_cc = 0;
  for (uint32_t c : buf) {
    const uint8_t cc = combining_class(c);
    if (starter != SIZE_MAX) {
      const bool adjacent = res.size() - 1 == starter;
      if (adjacent || (last_cc != 0 && last_cc < cc)) {
        if (const uint32_t comp = compose(res[starter], c)) {
          res[starter] = comp;
          continue;
        }
      }
    }
    if (cc == 0) starter = res.size();
    res.push_back(c);
    last_cc = cc;
  }
  std::string out;
  out.reserve(text.size());
  for (uint32_t c : res) {
    if (c & kRawByte) {
      out.push_back(char(c & 0xFF));
    } else {
      append_utf8(c, &out);
    }
  }
  return out;
}

std::string to_valid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    int len;
    if (decode_utf8(bytes, pos, &len) != kInvalid) {
      out.append(bytes.substr(pos, size_t(len)));
      pos += size_t(len);
      continue;
    }
    // One U+FFFD for the longest prefix of a valid sequence (at least a byte), as from_utf8_lossy.
    size_t skip = 1;
    for (size_t k = 2; k <= 3 && pos + k <= bytes.size(); ++k)
      if (is_partial_sequence(bytes.substr(pos, k))) skip = k;
    out.append("\xEF\xBF\xBD");
    pos += skip;
  }
  return out;
}

size_t complete_utf8_prefix(std::string_view bytes) {
  const size_t n = bytes.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    if ((uint8_t(bytes[n - back]) & 0xC0) == 0x80) continue;  // look further back for the lead
    return is_partial_sequence(bytes.substr(n - back)) ? n - back : n;
  }
  return n;
}

}  // namespace unicode

// ---- pre-tokenizers -------------------------------------------------------------------------

namespace {

using unicode::CharClass;

// The code points of a piece of text with their classes and byte offsets.
struct Chars {
  std::vector<uint32_t> cp;
  std::vector<CharClass> cls;
  std::vector<size_t> off;  // off[i] = byte offset of char i; off[size] = text size

  explicit Chars(std::string_view text) {
    cp.reserve(text.size());
    cls.reserve(text.size());
    off.reserve(text.size() + 1);
    for (size_t pos = 0; pos < text.size();) {
      int len;
      const uint32_t c = unicode::decode_utf8(text, pos, &len);
      cp.push_back(c);
      cls.push_back(c == unicode::kInvalid ? CharClass::kOther : unicode::char_class(c));
      off.push_back(pos);
      pos += size_t(len);
    }
    off.push_back(text.size());
  }
};

// A scanner over chars [begin, end): `end` is the end of the text as the regex sees it.
class Scanner {
 public:
  Scanner(const Chars& c, size_t end) : c_(c), end_(end) {}

  bool is(size_t i, CharClass k) const { return i < end_ && c_.cls[i] == k; }
  bool is_other(size_t i) const { return is(i, CharClass::kOther); }
  bool is_cp(size_t i, uint32_t cp) const { return i < end_ && c_.cp[i] == cp; }
  bool is_crlf(size_t i) const { return is_cp(i, '\r') || is_cp(i, '\n'); }
  size_t run(size_t i, CharClass k) const {
    while (is(i, k)) ++i;
    return i;
  }

  // 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive (then U+017F folds to s as well).
  size_t contraction(size_t i, bool fold) const {
    if (!is_cp(i, '\'') || i + 1 >= end_) return i;
    const auto lower = [&](size_t k) -> uint32_t {
      if (k >= end_) return 0;
      uint32_t v = c_.cp[k];
      if (fold && v >= 'A' && v <= 'Z') v += 'a' - 'A';
      if (fold && v == 0x17F) v = 's';
      return v;
    };
    const uint32_t a = lower(i + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    const uint32_t b = lower(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return i;
  }

  // \s+(?!\S)|\s+ at a whitespace char i: the run, less its last char when a non-space follows
  // and the run has more than one char (that char then joins the next pre-token).
  size_t whitespace(size_t i) const {
    const size_t j = run(i, CharClass::kSpace);
    if (j == end_ || j - i == 1) return j;
    return j - 1;
  }

  size_t gpt2(size_t i) const {
    if (size_t k = contraction(i, false); k != i) return k;
    const bool sp = is_cp(i, ' ');
    for (CharClass k : {CharClass::kLetter, CharClass::kNumber, CharClass::kOther}) {
      if (is(i, k)) return run(i, k);
      if (sp && is(i + 1, k)) return run(i + 1, k);
    }
    return whitespace(i);
  }

  size_t llama3(size_t i, size_t max_digits) const {
    if (size_t k = contraction(i, true); k != i) return k;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (is(i, CharClass::kLetter)) return run(i, CharClass::kLetter);
    if (!is_crlf(i) && !is(i, CharClass::kNumber) && is(i + 1, CharClass::kLetter))
      return run(i + 1, CharClass::kLetter);
    // \p{N}{1,max_digits}
    if (is(i, CharClass::kNumber)) {
      size_t j = i;
      while (j - i < max_digits && is(j, CharClass::kNumber)) ++j;
      return j;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    size_t o = is_other(i) ? i : (is_cp(i, ' ') && is_other(i + 1)) ? i + 1 : end_;
    if (o != end_) {
      size_t j = run(o, CharClass::kOther);
      while (is_crlf(j)) ++j;
      return j;
    }
    // \s*[\r\n]+ : up to the last line break of the whitespace run.
    const size_t j = run(i, CharClass::kSpace);
    for (size_t k = j; k > i; --k)
      if (is_crlf(k - 1)) return k;
    return whitespace(i);
  }

 private:
  const Chars& c_;
  size_t end_;
};

void split(const Chars& chars, std::string_view text, size_t begin, size_t end, PreTokenizer kind,
           std::vector<std::string_view>* out) {
  const Scanner s(chars, end);
  for (size_t i = begin; i < end;) {
    size_t j;
    switch (kind) {
      case PreTokenizer::kLlama3:
        j = s.llama3(i, 3);
        break;
      case PreTokenizer::kQwen2:
        j = s.llama3(i, 1);
        break;
      default:
        j = s.gpt2(i);
    }
    out->push_back(text.substr(chars.off[i], chars.off[j] - chars.off[i]));
    i = j;
  }
}

}  // namespace

void pre_tokenize(PreTokenizer kind, std::string_view text, std::vector<std::string_view>* out) {
  if (text.empty()) return;
  const Chars chars(text);
  const size_t n = chars.cp.size();
  if (kind != PreTokenizer::kSmolLM) {
    split(chars, text, 0, n, kind, out);
    return;
  }
  // Digits(individual_digits): each \p{N} char is a piece; the stretches between use gpt2.
  size_t start = 0;
  for (size_t i = 0; i < n; ++i) {
    if (chars.cls[i] != CharClass::kNumber) continue;
    split(chars, text, start, i, PreTokenizer::kGpt2, out);
    out->push_back(text.substr(chars.off[i], chars.off[i + 1] - chars.off[i]));
    start = i + 1;
  }
  split(chars, text, start, n, PreTokenizer::kGpt2, out);
}

}  // namespace tessera
