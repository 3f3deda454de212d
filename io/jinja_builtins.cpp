// Jinja2 builtins: attribute and item access, methods of str/dict/list (the subset a sandboxed
// chat template can call), tests ("is defined", "is string", ...), and the global functions that
// transformers provides (range, namespace, dict, raise_exception, strftime_now).
#include <algorithm>
#include <ctime>
#include <set>

#include "io/jinja_internal.h"

namespace tessera::jinja {

const Value* arg(const CallArgs& a, size_t index, std::string_view name) {
  for (const auto& [key, value] : a.kwargs) {
    if (key == name) return &value;
  }
  if (index < a.args.size()) return &a.args[index];
  return nullptr;
}

namespace {

// An argument that is absent or None.
bool absent(const Value* v) {
  return v == nullptr || v->is_none();
}

const std::string& string_arg(const Value* v, std::string_view what) {
  TESSERA_CHECK(v && v->is_string(),
                what << " must be a string, not " << (v ? v->type_name() : std::string("nothing")));
  return v->str();
}

int64_t int_arg(const Value* v, std::string_view what) {
  TESSERA_CHECK(v && v->is_integral(), what << " must be an integer, not "
                                            << (v ? v->type_name() : std::string("nothing")));
  return v->as_int();
}

[[noreturn]] void fail_undefined(const Value& v, const std::string& what) {
  TESSERA_FAIL((v.undefined_hint().empty() ? std::string("value is undefined") : v.undefined_hint())
               << " (while reading " << what << ")");
}

const std::set<std::string, std::less<>>& string_methods() {
  static const std::set<std::string, std::less<>> kNames = {
      "strip",      "lstrip",   "rstrip",  "lower",      "upper",   "title",   "capitalize",
      "startswith", "endswith", "split",   "rsplit",     "replace", "find",    "rfind",
      "index",      "count",    "join",    "splitlines", "isdigit", "isalpha", "isalnum",
      "isspace",    "islower",  "isupper", "format",     "ljust",   "rjust",   "center"};
  return kNames;
}

bool is_cased(char32_t c) {
  return py_lower(c) != c || py_upper(c) != c;
}

Value split_string(const std::string& s, const Value* sep_arg, const Value* max_arg,
                   bool from_right) {
  int64_t maxsplit = absent(max_arg) ? -1 : int_arg(max_arg, "maxsplit");
  List parts;
  if (absent(sep_arg)) {
    std::vector<char32_t> cps = decode_utf8(s);
    std::vector<std::pair<size_t, size_t>> words;  // [begin, end) in code points
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && py_isspace(cps[i])) ++i;
      if (i == cps.size()) break;
      size_t j = i;
      while (j < cps.size() && !py_isspace(cps[j])) ++j;
      words.emplace_back(i, j);
      i = j;
    }
    auto piece = [&](size_t b, size_t e) {
      return Value::string(encode_utf8(std::vector<char32_t>(cps.begin() + b, cps.begin() + e)));
    };
    size_t n = words.size();
    if (maxsplit < 0 || static_cast<size_t>(maxsplit) + 1 >= n) {
      for (auto [b, e] : words) parts.push_back(piece(b, e));
    } else if (!from_right) {
      for (size_t k = 0; k < static_cast<size_t>(maxsplit); ++k)
        parts.push_back(piece(words[k].first, words[k].second));
      size_t b = words[maxsplit].first;
      size_t e = cps.size();
      while (e > b && py_isspace(cps[e - 1])) --e;
      parts.push_back(piece(b, e));
    } else {
      size_t keep = n - static_cast<size_t>(maxsplit);
      size_t b = 0;
      while (b < cps.size() && py_isspace(cps[b])) ++b;
      parts.push_back(piece(b, words[keep - 1].second));
      for (size_t k = keep; k < n; ++k) parts.push_back(piece(words[k].first, words[k].second));
    }
    return Value::list(std::move(parts));
  }
  const std::string& sep = string_arg(sep_arg, "separator");
  TESSERA_CHECK(!sep.empty(), "empty separator");
  std::vector<std::string> pieces;
  if (!from_right) {
    size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(pieces.size()) < maxsplit) {
      size_t hit = s.find(sep, start);
      if (hit == std::string::npos) break;
      pieces.push_back(s.substr(start, hit - start));
      start = hit + sep.size();
    }
    pieces.push_back(s.substr(start));
  } else {
    size_t end = s.size();
    std::vector<std::string> rev;
    while (maxsplit < 0 || static_cast<int64_t>(rev.size()) < maxsplit) {
      if (end < sep.size()) break;
      size_t hit = s.rfind(sep, end - sep.size());
      if (hit == std::string::npos) break;
      rev.push_back(s.substr(hit + sep.size(), end - hit - sep.size()));
      end = hit;
    }
    rev.push_back(s.substr(0, end));
    pieces.assign(rev.rbegin(), rev.rend());
  }
  for (auto& p : pieces) parts.push_back(Value::string(std::move(p)));
  return Value::list(std::move(parts));
}

std::string replace_string(const std::string& s, const std::string& old, const std::string& repl,
                           int64_t count) {
  std::string out;
  if (old.empty()) {
    std::vector<char32_t> cps = decode_utf8(s);
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += repl;
        ++done;
      }
      if (i < cps.size()) append_utf8(out, cps[i]);
    }
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t hit = s.find(old, start);
    if (hit == std::string::npos) break;
    out.append(s, start, hit - start);
    out += repl;
    start = hit + old.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

// str.format with "{}", "{0}" and "{name}" fields (no format specs or conversions).
std::string format_string(const std::string& fmt, const CallArgs& a) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '}') {
      TESSERA_CHECK(i + 1 < fmt.size() && fmt[i + 1] == '}',
                    "single '}' encountered in format string");
      out += '}';
      ++i;
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    size_t close = fmt.find('}', i);
    TESSERA_CHECK(close != std::string::npos, "single '{' encountered in format string");
    std::string field = fmt.substr(i + 1, close - i - 1);
    TESSERA_CHECK(field.find_first_of(":!") == std::string::npos,
                  "format specs are not supported in str.format: '{" << field << "}'");
    const Value* v = nullptr;
    if (field.empty()) {
      v = auto_index < a.args.size() ? &a.args[auto_index] : nullptr;
      ++auto_index;
    } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
      size_t k = std::stoul(field);
      v = k < a.args.size() ? &a.args[k] : nullptr;
    } else {
      for (const auto& [key, value] : a.kwargs) {
        if (key == field) v = &value;
      }
    }
    TESSERA_CHECK(v, "str.format has no value for field '{" << field << "}'");
    out += to_str(*v);
    i = close;
  }
  return out;
}

template <typename Pred>
Value all_chars(const std::string& s, Pred pred) {
  std::vector<char32_t> cps = decode_utf8(s);
  if (cps.empty()) return Value::boolean(false);
  return Value::boolean(std::all_of(cps.begin(), cps.end(), pred));
}

// Python str.islower / str.isupper: at least one cased character and none of the other case.
bool has_case(const std::string& s, bool lower) {
  bool cased = false;
  for (char32_t c : decode_utf8(s)) {
    if (!is_cased(c)) continue;
    cased = true;
    if (lower ? py_lower(c) != c : py_upper(c) != c) return false;
  }
  return cased;
}

bool py_isalpha(char32_t c) {
  return py_isalnum(c) && !(c >= '0' && c <= '9');
}

std::string pad_string(const std::string& s, const CallArgs& a, int where) {
  int64_t width = int_arg(arg(a, 0, "width"), "width");
  const Value* fill_arg = arg(a, 1, "fillchar");
  std::string fill = absent(fill_arg) ? " " : string_arg(fill_arg, "fillchar");
  int64_t len = static_cast<int64_t>(utf8_length(s));
  if (width <= len) return s;
  int64_t total = width - len;
  int64_t left = where < 0 ? 0 : where > 0 ? total : total / 2 + (total & width & 1);
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += s;
  for (int64_t i = 0; i < total - left; ++i) out += fill;
  return out;
}

Value string_method(const std::string& s, const std::string& name, const CallArgs& a) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const Value* chars = arg(a, 0, "chars");
    const std::string* set = absent(chars) ? nullptr : &string_arg(chars, "strip characters");
    return Value::string(py_strip(s, name != "rstrip", name != "lstrip", set));
  }
  if (name == "lower" || name == "upper") {
    std::string out;
    for (char32_t c : decode_utf8(s)) {
      if (c == 0xDF && name == "upper") {
        out += "SS";  // the one common character whose upper case is two letters
      } else {
        append_utf8(out, name == "lower" ? py_lower(c) : py_upper(c));
      }
    }
    return Value::string(std::move(out));
  }
  if (name == "title" || name == "capitalize") {
    std::string out;
    bool prev_cased = false;
    bool first = true;
    for (char32_t c : decode_utf8(s)) {
      bool upper = name == "title" ? !prev_cased : first;
      append_utf8(out, upper ? py_upper(c) : py_lower(c));
      prev_cased = is_cased(c);
      first = false;
    }
    return Value::string(std::move(out));
  }
  if (name == "startswith" || name == "endswith") {
    const Value* p = arg(a, 0, "prefix");
    TESSERA_CHECK(p, name << "() takes at least 1 argument");
    std::string subject = s;
    if (!absent(arg(a, 1, "start")) || !absent(arg(a, 2, "end"))) {
      Value start = a.args.size() > 1 ? a.args[1] : Value::none();
      Value end = a.args.size() > 2 ? a.args[2] : Value::none();
      subject = get_slice(Value::string(s), start, end, Value::none()).str();
    }
    List options = p->is_list() ? p->items() : List{*p};
    for (const Value& o : options) {
      const std::string& x = string_arg(&o, name + " argument");
      bool hit = name == "startswith"
                     ? subject.compare(0, x.size(), x) == 0
                     : subject.size() >= x.size() &&
                           subject.compare(subject.size() - x.size(), x.size(), x) == 0;
      if (hit) return Value::boolean(true);
    }
    return Value::boolean(false);
  }
  if (name == "split" || name == "rsplit") {
    return split_string(s, arg(a, 0, "sep"), arg(a, 1, "maxsplit"), name == "rsplit");
  }
  if (name == "replace") {
    const Value* count = arg(a, 2, "count");
    return Value::string(replace_string(s, string_arg(arg(a, 0, "old"), "replace() argument 1"),
                                        string_arg(arg(a, 1, "new"), "replace() argument 2"),
                                        absent(count) ? -1 : int_arg(count, "count")));
  }
  if (name == "find" || name == "rfind" || name == "index") {
    const std::string& sub = string_arg(arg(a, 0, "sub"), name + "() argument");
    size_t hit = name == "rfind" ? s.rfind(sub) : s.find(sub);
    TESSERA_CHECK(hit != std::string::npos || name != "index", "substring not found");
    if (hit == std::string::npos) return Value::integer(-1);
    return Value::integer(static_cast<int64_t>(utf8_length(std::string_view(s).substr(0, hit))));
  }
  if (name == "count") {
    const std::string& sub = string_arg(arg(a, 0, "sub"), "count() argument");
    if (sub.empty()) return Value::integer(static_cast<int64_t>(utf8_length(s)) + 1);
    int64_t n = 0;
    for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
    return Value::integer(n);
  }
  if (name == "join") {
    const Value* items = arg(a, 0, "iterable");
    TESSERA_CHECK(items, "join() takes exactly one argument");
    std::string out;
    size_t i = 0;
    for (const Value& v : iterate(*items)) {
      TESSERA_CHECK(v.is_string(), "sequence item " << i << ": expected str instance, "
                                                    << v.type_name() << " found");
      if (i++ > 0) out += s;
      out += v.str();
    }
    return Value::string(std::move(out));
  }
  if (name == "splitlines") {
    const Value* keep = arg(a, 0, "keepends");
    bool keepends = keep && keep->truthy();
    List lines;
    std::vector<char32_t> cps = decode_utf8(s);
    std::vector<char32_t> cur;
    for (size_t i = 0; i < cps.size(); ++i) {
      char32_t c = cps[i];
      bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
                 c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
      if (!brk) {
        cur.push_back(c);
        continue;
      }
      if (keepends) cur.push_back(c);
      if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') {
        if (keepends) cur.push_back('\n');
        ++i;
      }
      lines.push_back(Value::string(encode_utf8(cur)));
      cur.clear();
    }
    if (!cur.empty()) lines.push_back(Value::string(encode_utf8(cur)));
    return Value::list(std::move(lines));
  }
  if (name == "isdigit") return all_chars(s, [](char32_t c) { return c >= '0' && c <= '9'; });
  if (name == "isalpha") return all_chars(s, py_isalpha);
  if (name == "isalnum") {
    return all_chars(s, py_isalnum);
  }
  if (name == "isspace") return all_chars(s, py_isspace);
  if (name == "islower") return Value::boolean(has_case(s, true));
  if (name == "isupper") return Value::boolean(has_case(s, false));
  if (name == "format") return Value::string(format_string(s, a));
  if (name == "ljust") return Value::string(pad_string(s, a, -1));
  if (name == "rjust") return Value::string(pad_string(s, a, 1));
  if (name == "center") return Value::string(pad_string(s, a, 0));
  TESSERA_FAIL("'str' object has no attribute '" << name << "'");
}

}  // namespace

bool has_method(const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case Value::Kind::kString:
      return string_methods().count(name) > 0;
    case Value::Kind::kDict:
      return name == "get" || name == "items" || name == "keys" || name == "values";
    case Value::Kind::kList:
      return name == "index" || name == "count";
    default:
      return false;
  }
}

Value call_method(const Value& obj, const std::string& name, CallArgs& a, bool* found) {
  *found = has_method(obj, name);
  if (!*found) return Value();
  if (obj.is_string()) return string_method(obj.str(), name, a);
  if (obj.is_dict()) {
    const Dict& d = obj.dict();
    if (name == "get") {
      const Value* key = arg(a, 0, "key");
      TESSERA_CHECK(key, "get expected at least 1 argument");
      const Value* v = d.find(*key);
      if (v) return *v;
      const Value* def = arg(a, 1, "default");
      return def ? *def : Value::none();
    }
    List out;
    for (const auto& [key, value] : d.entries) {
      if (name == "items") {
        out.push_back(Value::tuple({key, value}));
      } else {
        out.push_back(name == "keys" ? key : value);
      }
    }
    return Value::list(std::move(out));
  }
  const List& items = obj.items();
  const Value* x = arg(a, 0, "value");
  TESSERA_CHECK(x, "list." << name << "() takes exactly one argument");
  int64_t count = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!values_equal(items[i], *x)) continue;
    if (name == "index") return Value::integer(static_cast<int64_t>(i));
    ++count;
  }
  TESSERA_CHECK(name != "index", to_repr(*x) << " is not in list");
  return Value::integer(count);
}

Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) fail_undefined(obj, "attribute '" + name + "'");
  if (has_method(obj, name)) {
    return Value::callable(name, [obj, name](Evaluator&, CallArgs& a) {
      bool found = true;
      return call_method(obj, name, a, &found);
    });
  }
  if (obj.is_dict() || obj.kind() == Value::Kind::kNamespace) {
    if (const Value* v = obj.dict().find(std::string_view(name))) return *v;
  }
  std::string hint(1, '\'');
  hint += obj.type_name();
  hint += " object' has no attribute '";
  hint += name;
  hint += '\'';
  return Value::undefined(std::move(hint));
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) fail_undefined(obj, "item " + to_repr(key));
  if (obj.is_dict()) {
    if (const Value* v = obj.dict().find(key)) return *v;
  } else if ((obj.is_list() || obj.is_string()) && key.is_integral()) {
    int64_t n = obj.is_list() ? static_cast<int64_t>(obj.items().size())
                              : static_cast<int64_t>(utf8_length(obj.str()));
    int64_t i = key.as_int();
    if (i < 0) i += n;
    if (i >= 0 && i < n) {
      if (obj.is_list()) return obj.items()[static_cast<size_t>(i)];
      if (is_ascii(obj.str())) return Value::string(obj.str().substr(static_cast<size_t>(i), 1));
      std::string out;
      append_utf8(out, decode_utf8(obj.str())[static_cast<size_t>(i)]);
      return Value::string(std::move(out));
    }
  }
  if (key.is_string()) return get_attr(obj, key.str());
  return Value::undefined(obj.type_name() + " object has no element " + to_repr(key));
}

Value get_slice(const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v) {
  if (obj.is_undefined()) fail_undefined(obj, "a slice");
  TESSERA_CHECK(obj.is_list() || obj.is_string(),
                "'" << obj.type_name() << "' object is not subscriptable");
  auto opt = [](const Value& v) { return v.is_undefined() || v.is_none(); };
  for (const Value* v : {&start_v, &stop_v, &step_v}) {
    TESSERA_CHECK(opt(*v) || v->is_integral(), "slice indices must be integers or None");
  }
  std::vector<char32_t> cps;
  int64_t n = 0;
  if (obj.is_list()) {
    n = static_cast<int64_t>(obj.items().size());
  } else {
    cps = decode_utf8(obj.str());
    n = static_cast<int64_t>(cps.size());
  }
  int64_t step = opt(step_v) ? 1 : step_v.as_int();
  TESSERA_CHECK(step != 0, "slice step cannot be zero");
  int64_t lower = step > 0 ? 0 : -1;
  int64_t upper = step > 0 ? n : n - 1;
  auto bound = [&](const Value& v, int64_t def) {
    if (opt(v)) return def;
    int64_t i = v.as_int();
    if (i < 0) i += n;
    return std::clamp(i, lower, upper);
  };
  int64_t start = bound(start_v, step > 0 ? lower : upper);
  int64_t stop = bound(stop_v, step > 0 ? upper : lower);
  List out;
  std::vector<char32_t> out_cps;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (obj.is_list()) {
      out.push_back(obj.items()[static_cast<size_t>(i)]);
    } else {
      out_cps.push_back(cps[static_cast<size_t>(i)]);
    }
  }
  if (obj.is_tuple()) return Value::tuple(std::move(out));
  if (obj.is_list()) return Value::list(std::move(out));
  return Value::string(encode_utf8(out_cps));
}

List iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList:
      return v.items();
    case Value::Kind::kDict: {
      List keys;
      for (const auto& entry : v.dict().entries) keys.push_back(entry.first);
      return keys;
    }
    case Value::Kind::kString: {
      List chars;
      for (char32_t c : decode_utf8(v.str())) {
        std::string s;
        append_utf8(s, c);
        chars.push_back(Value::string(std::move(s)));
      }
      return chars;
    }
    default:
      TESSERA_FAIL("'" << v.type_name() << "' object is not iterable");
  }
}

int64_t length_of(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(utf8_length(v.str()));
    case Value::Kind::kList:
      return static_cast<int64_t>(v.items().size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.dict().entries.size());
    default:
      TESSERA_FAIL("object of type '" << v.type_name() << "' has no len()");
  }
}

// ---- tests -------------------------------------------------------------------------------------

bool has_test(const std::string& name) {
  static const std::set<std::string, std::less<>> kTests = {
      "defined",     "undefined", "none",     "boolean", "true",     "false",    "integer",
      "float",       "number",    "string",   "mapping", "iterable", "sequence", "callable",
      "sameas",      "escaped",   "in",       "eq",      "equalto",  "==",       "ne",
      "!=",          "lt",        "lessthan", "<",       "le",       "<=",       "gt",
      "greaterthan", ">",         "ge",       ">=",      "even",     "odd",      "divisibleby",
      "lower",       "upper",     "filter",   "test"};
  return kTests.count(name) > 0;
}

bool apply_test(Evaluator&, const std::string& name, const Value& v, CallArgs& a) {
  using K = Value::Kind;
  const Value* other = arg(a, 0, "other");
  auto need_other = [&]() -> const Value& {
    TESSERA_CHECK(other, "test '" << name << "' needs an argument");
    return *other;
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind() == K::kBool;
  if (name == "true") return v.kind() == K::kBool && v.as_bool();
  if (name == "false") return v.kind() == K::kBool && !v.as_bool();
  if (name == "integer") return v.kind() == K::kInt;
  if (name == "float") return v.kind() == K::kFloat;
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable" || name == "sequence") {
    return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
  }
  if (name == "callable") return v.kind() == K::kCallable;
  if (name == "escaped") return false;
  if (name == "sameas") {
    const Value& o = need_other();
    if (v.kind() != o.kind()) return false;
    return v.is_none() || v.is_undefined() || values_equal(v, o);
  }
  if (name == "in") {
    const Value& o = need_other();
    if (o.is_string()) return v.is_string() && o.str().find(v.str()) != std::string::npos;
    for (const Value& item : iterate(o)) {
      if (values_equal(item, v)) return true;
    }
    return false;
  }
  if (name == "eq" || name == "equalto" || name == "==") return values_equal(v, need_other());
  if (name == "ne" || name == "!=") return !values_equal(v, need_other());
  if (name == "lt" || name == "lessthan" || name == "<") return values_less(v, need_other());
  if (name == "gt" || name == "greaterthan" || name == ">") return values_less(need_other(), v);
  if (name == "le" || name == "<=") return !values_less(need_other(), v);
  if (name == "ge" || name == ">=") return !values_less(v, need_other());
  if (name == "even" || name == "odd") {
    TESSERA_CHECK(v.is_integral(), "test '" << name << "' needs an integer, not " << v.type_name());
    return (v.as_int() % 2 == 0) == (name == "even");
  }
  if (name == "divisibleby") {
    int64_t d = int_arg(other, "divisibleby argument");
    TESSERA_CHECK(d != 0, "integer division or modulo by zero");
    TESSERA_CHECK(v.is_integral(), "test 'divisibleby' needs an integer, not " << v.type_name());
    return v.as_int() % d == 0;
  }
  if (name == "lower" || name == "upper") return has_case(to_str(v), name == "lower");
  if (name == "test") return v.is_string() && has_test(v.str());
  if (name == "filter") return v.is_string() && has_filter(v.str());
  TESSERA_FAIL("no test named '" << name << "'");
}

// ---- globals -----------------------------------------------------------------------------------

namespace {

Value range_fn(Evaluator&, CallArgs& a) {
  TESSERA_CHECK(!a.args.empty() && a.args.size() <= 3, "range expected 1 to 3 arguments");
  int64_t start = 0;
  int64_t stop = 0;
  int64_t step = 1;
  if (a.args.size() == 1) {
    stop = int_arg(&a.args[0], "range() argument");
  } else {
    start = int_arg(&a.args[0], "range() argument");
    stop = int_arg(&a.args[1], "range() argument");
    if (a.args.size() == 3) step = int_arg(&a.args[2], "range() step");
  }
  TESSERA_CHECK(step != 0, "range() arg 3 must not be zero");
  List out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    TESSERA_CHECK(out.size() < 100000, "range too big, maximum size is 100000");
    out.push_back(Value::integer(i));
  }
  return Value::list(std::move(out));
}

Dict kwargs_dict(const CallArgs& a, const char* what) {
  TESSERA_CHECK(a.args.size() <= 1, what << " takes at most one positional argument");
  Dict d;
  if (!a.args.empty()) {
    const Value& init = a.args[0];
    if (init.is_dict()) {
      d = init.dict();
    } else {
      for (const Value& pair : iterate(init)) {
        List kv = iterate(pair);
        TESSERA_CHECK(kv.size() == 2, what << " sequence elements must have length 2");
        d.set(kv[0], kv[1]);
      }
    }
  }
  for (const auto& [key, value] : a.kwargs) d.set(Value::string(key), value);
  return d;
}

Value namespace_fn(Evaluator&, CallArgs& a) {
  Dict d = kwargs_dict(a, "namespace()");
  for (const auto& entry : d.entries) {
    TESSERA_CHECK(
        !entry.first.is_string() || entry.first.str().empty() || entry.first.str()[0] != '_',
        "chat templates cannot store underscore-prefixed attributes on a namespace, but got "
            << to_repr(entry.first));
  }
  return Value::make_namespace(std::move(d));
}

Value dict_fn(Evaluator&, CallArgs& a) {
  return Value::dict(kwargs_dict(a, "dict()"));
}

Value raise_exception_fn(Evaluator&, CallArgs& a) {
  const Value* msg = arg(a, 0, "message");
  throw RaisedException{msg ? to_str(*msg) : std::string()};
}

Value strftime_now_fn(Evaluator&, CallArgs& a) {
  const std::string& fmt = string_arg(arg(a, 0, "format"), "strftime_now() format");
  std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  if (fmt.empty()) return Value::string("");
  std::vector<char> buf(256 + fmt.size() * 8);
  size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &local);
  return Value::string(std::string(buf.data(), n));
}

}  // namespace

Value builtin_global(const std::string& name) {
  static const Value kRange = Value::callable("range", range_fn);
  static const Value kNamespace = Value::callable("namespace", namespace_fn);
  static const Value kDict = Value::callable("dict", dict_fn);
  static const Value kRaise = Value::callable("raise_exception", raise_exception_fn);
  static const Value kStrftime = Value::callable("strftime_now", strftime_now_fn);
  if (name == "range") return kRange;
  if (name == "namespace") return kNamespace;
  if (name == "dict") return kDict;
  if (name == "raise_exception") return kRaise;
  if (name == "strftime_now") return kStrftime;
  return Value();
}

}  // namespace tessera::jinja
