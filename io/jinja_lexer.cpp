// Jinja2 lexer with the whitespace rules of transformers' chat-template environment:
// trim_blocks (drop the newline after a block or comment tag), lstrip_blocks (drop the indentation
// before a block or comment tag that starts a line), "-" and "+" tag modifiers, newlines normalized
// to "\n", and one trailing newline of the source dropped.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "io/jinja_internal.h"

namespace tessera::jinja {
namespace {

constexpr size_t kMaxTagTokens = 5000;

class Lexer {
 public:
  explicit Lexer(std::string_view raw) {
    src_.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\r') {
        src_ += '\n';
        if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
      } else {
        src_ += raw[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::vector<Token> run() {
    size_t pos = 0;
    const size_t n = src_.size();
    while (pos < n) {
      size_t tag = find_tag(pos);
      if (tag == std::string::npos) {
        emit_text(src_.substr(pos), pos);
        break;
      }
      std::string text = src_.substr(pos, tag - pos);
      char type = src_[tag + 1];
      char sign = tag + 2 < n && (src_[tag + 2] == '-' || src_[tag + 2] == '+') ? src_[tag + 2] : 0;
      size_t raw_end = type == '%' ? match_raw_begin(tag) : 0;
      apply_left_strip(text, sign, type != '{', pos == 0 || src_[pos - 1] == '\n');
      emit_text(std::move(text), pos);
      size_t body = tag + 2 + (sign ? 1 : 0);
      if (raw_end != 0) {
        pos = lex_raw(raw_end, tag);
      } else if (type == '#') {
        pos = skip_comment(body, tag);
      } else {
        pos = lex_tag(body, tag, type == '%');
      }
    }
    Token eof;
    eof.kind = TokKind::kEof;
    set_pos(eof, n);
    tokens_.push_back(eof);
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail(size_t pos, const std::string& msg) const {
    int line = 0;
    int col = 0;
    line_col(pos, &line, &col);
    TESSERA_FAIL("jinja template syntax error at line " << line << ", column " << col << ": "
                                                        << msg);
  }

  void line_col(size_t pos, int* line, int* col) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), pos);
    size_t idx = static_cast<size_t>(it - line_starts_.begin()) - 1;
    *line = static_cast<int>(idx) + 1;
    *col = static_cast<int>(pos - line_starts_[idx]) + 1;
  }

  void set_pos(Token& t, size_t pos) const { line_col(pos, &t.line, &t.col); }

  size_t find_tag(size_t pos) const {
    for (size_t i = src_.find('{', pos); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return std::string::npos;
  }

  bool is_space_at(size_t i) const {
    return i < src_.size() && (src_[i] == ' ' || src_[i] == '\t' || src_[i] == '\n' ||
                               src_[i] == '\v' || src_[i] == '\f');
  }

  size_t skip_spaces(size_t i) const {
    while (is_space_at(i)) ++i;
    return i;
  }

  // Python's \s* after a "-" end tag: all whitespace, Unicode included.
  size_t skip_py_space(size_t i) const {
    std::string rest = py_strip(std::string_view(src_).substr(i), true, false, nullptr);
    return src_.size() - rest.size();
  }

  // If src_[tag] starts "{% raw %}" (any modifiers), returns the position after it, else 0.
  size_t match_raw_begin(size_t tag) const {
    size_t i = tag + 2;
    if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) ++i;
    i = skip_spaces(i);
    if (src_.compare(i, 3, "raw") != 0) return 0;
    i = skip_spaces(i + 3);
    if (src_.compare(i, 3, "-%}") == 0) return skip_py_space(i + 3);
    if (src_.compare(i, 2, "%}") == 0) return i + 2;
    return 0;
  }

  // Whitespace control for the text before a tag: "-" strips all trailing whitespace; otherwise,
  // for block and comment tags, lstrip_blocks removes indentation that starts a line.
  static void apply_left_strip(std::string& text, char sign, bool block_like, bool line_starting) {
    if (sign == '-') {
      text = py_strip(text, false, true, nullptr);
    } else if (sign != '+' && block_like) {
      size_t nl = text.rfind('\n');
      size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
          py_strip(std::string_view(text).substr(l_pos), true, false, nullptr).empty()) {
        text.resize(l_pos);
      }
    }
  }

  void emit_text(std::string text, size_t pos) {
    if (text.empty()) return;
    Token t;
    t.kind = TokKind::kText;
    t.text = std::move(text);
    set_pos(t, pos);
    tokens_.push_back(std::move(t));
  }

  // The end of a block tag or comment: "+%}" keeps what follows, "-%}" strips all following
  // whitespace, and a plain "%}" drops one following newline (trim_blocks).
  size_t after_block_end(size_t end_pos, char sign) const {
    if (sign == '-') return skip_py_space(end_pos);
    if (sign == '+') return end_pos;
    return end_pos < src_.size() && src_[end_pos] == '\n' ? end_pos + 1 : end_pos;
  }

  size_t skip_comment(size_t body, size_t tag) const {
    size_t close = src_.find("#}", body);
    if (close == std::string::npos) fail(tag, "missing end of comment tag");
    char sign =
        close > body && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : 0;
    return after_block_end(close + 2, sign);
  }

  size_t lex_raw(size_t start, size_t tag) {
    for (size_t i = src_.find("{%", start); i != std::string::npos; i = src_.find("{%", i + 1)) {
      size_t j = i + 2;
      char sign = j < src_.size() && (src_[j] == '-' || src_[j] == '+') ? src_[j] : 0;
      if (sign) ++j;
      j = skip_spaces(j);
      if (src_.compare(j, 6, "endraw") != 0) continue;
      j = skip_spaces(j + 6);
      char end_sign = 0;
      if (j < src_.size() && (src_[j] == '-' || src_[j] == '+')) end_sign = src_[j++];
      if (src_.compare(j, 2, "%}") != 0) continue;
      std::string text = src_.substr(start, i - start);
      apply_left_strip(text, sign, true, start == 0 || src_[start - 1] == '\n');
      emit_text(std::move(text), start);
      return after_block_end(j + 2, end_sign);
    }
    fail(tag, "missing end of raw directive");
  }

  size_t lex_tag(size_t pos, size_t tag, bool block) {
    Token begin;
    begin.kind = block ? TokKind::kBlockBegin : TokKind::kVarBegin;
    set_pos(begin, tag);
    tokens_.push_back(begin);
    std::vector<char> brackets;
    const size_t first_token = tokens_.size();
    const size_t n = src_.size();
    while (true) {
      while (pos < n && (src_[pos] == ' ' || src_[pos] == '\t' || src_[pos] == '\n' ||
                         src_[pos] == '\v' || src_[pos] == '\f')) {
        ++pos;
      }
      if (pos >= n)
        fail(tag,
             std::string("unexpected end of template, expected '") + (block ? "%}" : "}}") + "'");
      if (brackets.empty()) {
        char sign = src_[pos] == '-' || src_[pos] == '+' ? src_[pos] : 0;
        size_t close = pos + (sign ? 1 : 0);
        bool closes = block ? src_.compare(close, 2, "%}") == 0 : src_.compare(close, 2, "}}") == 0;
        if (closes && (block || sign != '+')) {
          Token end;
          end.kind = block ? TokKind::kBlockEnd : TokKind::kVarEnd;
          set_pos(end, pos);
          tokens_.push_back(end);
          if (block) return after_block_end(close + 2, sign);
          return sign == '-' ? skip_py_space(close + 2) : close + 2;
        }
      }
      pos = lex_token(pos, brackets);
      // Bounds the size (hence the depth) of one expression's syntax tree.
      if (tokens_.size() - first_token > kMaxTagTokens) fail(tag, "tag has too many tokens");
    }
  }

  Token& push(TokKind kind, std::string text, size_t pos) {
    Token& t = tokens_.emplace_back();
    t.kind = kind;
    t.text = std::move(text);
    set_pos(t, pos);
    return t;
  }

  size_t lex_token(size_t pos, std::vector<char>& brackets) {
    char c = src_[pos];
    if (std::isdigit(static_cast<unsigned char>(c))) return lex_number(pos);
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t end = pos;
      while (end < src_.size() &&
             (std::isalnum(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) {
        ++end;
      }
      push(TokKind::kName, src_.substr(pos, end - pos), pos);
      return end;
    }
    if (c == '\'' || c == '"') return lex_string(pos);
    static const char* const kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : kTwo) {
      if (src_.compare(pos, 2, op) == 0) {
        push(TokKind::kOp, src_.substr(pos, 2), pos);
        return pos + 2;
      }
    }
    if (std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos) {
      fail(pos, std::string("unexpected char '") + c + "'");
    }
    if (c == '(' || c == '[' || c == '{') {
      brackets.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    } else if (c == ')' || c == ']' || c == '}') {
      if (brackets.empty()) fail(pos, std::string("unexpected '") + c + "'");
      if (brackets.back() != c) {
        fail(pos, std::string("unexpected '") + c + "', expected '" + brackets.back() + "'");
      }
      brackets.pop_back();
    }
    push(TokKind::kOp, src_.substr(pos, 1), pos);
    return pos + 1;
  }

  // Digits with optional single underscores between them; returns the end.
  size_t scan_digits(size_t pos, std::string& out, int base) const {
    auto is_digit = [base](char ch) {
      if (base == 16) return std::isxdigit(static_cast<unsigned char>(ch)) != 0;
      return ch >= '0' && ch < static_cast<char>('0' + base);
    };
    while (pos < src_.size()) {
      if (is_digit(src_[pos])) {
        out += src_[pos++];
      } else if (src_[pos] == '_' && !out.empty() && pos + 1 < src_.size() &&
                 is_digit(src_[pos + 1])) {
        ++pos;
      } else {
        break;
      }
    }
    return pos;
  }

  size_t lex_number(size_t pos) {
    const size_t start = pos;
    std::string digits;
    if (src_[pos] == '0' && pos + 2 < src_.size() &&
        std::string_view("bBoOxX").find(src_[pos + 1]) != std::string_view::npos) {
      char p = static_cast<char>(std::tolower(static_cast<unsigned char>(src_[pos + 1])));
      int base = p == 'b' ? 2 : p == 'o' ? 8 : 16;
      size_t end = scan_digits(pos + 2, digits, base);
      if (!digits.empty()) {
        push(TokKind::kInt, "", start).int_value = std::strtoll(digits.c_str(), nullptr, base);
        return end;
      }
    }
    pos = scan_digits(pos, digits, 10);
    bool is_float = false;
    bool after_dot = start > 0 && src_[start - 1] == '.';  // "x.0.1" reads as items, not a float
    if (!after_dot && pos + 1 < src_.size() && src_[pos] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[pos + 1]))) {
      digits += '.';
      pos = scan_digits(pos + 1, digits, 10);
      is_float = true;
    }
    if (!after_dot && pos < src_.size() && (src_[pos] == 'e' || src_[pos] == 'E')) {
      size_t q = pos + 1;
      std::string exp = "e";
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) exp += src_[q++];
      if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
        pos = scan_digits(q, exp, 10);
        digits += exp;
        is_float = true;
      }
    }
    if (is_float) {
      push(TokKind::kFloat, "", start).float_value = std::strtod(digits.c_str(), nullptr);
    } else {
      errno = 0;
      int64_t value = std::strtoll(digits.c_str(), nullptr, 10);
      if (errno == ERANGE) fail(start, "integer literal " + digits + " is too large");
      push(TokKind::kInt, "", start).int_value = value;
    }
    return pos;
  }

  static int hex_value(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
  }

  // String literal with Python escape sequences (jinja decodes them with "unicode-escape").
  size_t lex_string(size_t pos) {
    const char quote = src_[pos];
    const size_t start = pos++;
    std::string out;
    while (true) {
      if (pos >= src_.size()) fail(start, "unterminated string literal");
      char c = src_[pos];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++pos;
        continue;
      }
      if (pos + 1 >= src_.size()) fail(start, "unterminated string literal");
      char e = src_[pos + 1];
      pos += 2;
      switch (e) {
        case '\n':
          break;  // line continuation
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        case 'x':
        case 'u':
        case 'U': {
          size_t len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          char32_t cp = 0;
          for (size_t k = 0; k < len; ++k) {
            int h = pos + k < src_.size() ? hex_value(src_[pos + k]) : -1;
            if (h < 0) fail(pos - 2, std::string("truncated \\") + e + " escape in string literal");
            cp = cp * 16 + static_cast<char32_t>(h);
          }
          if (cp > 0x10FFFF) fail(pos - 2, "illegal Unicode character in string literal");
          append_utf8(out, cp);
          pos += len;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            char32_t cp = static_cast<char32_t>(e - '0');
            for (int k = 0; k < 2 && pos < src_.size() && src_[pos] >= '0' && src_[pos] <= '7';
                 ++k) {
              cp = cp * 8 + static_cast<char32_t>(src_[pos++] - '0');
            }
            append_utf8(out, cp);
          } else {
            out += '\\';  // unknown escapes stay as written
            out += e;
          }
      }
    }
    push(TokKind::kString, std::move(out), start);
    return pos + 1;
  }

  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) {
  return Lexer(source).run();
}

}  // namespace tessera::jinja
