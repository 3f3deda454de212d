// Jinja2 filters ({{ x | name(args) }}), with jinja2's semantics and transformers' tojson.
#include <algorithm>
#include <cctype>
#include <cfenv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "io/jinja_internal.h"

namespace tessera::jinja {
namespace {

bool absent(const Value* v) {
  return v == nullptr || v->is_none();
}
bool flag(const Value* v) {
  return v != nullptr && v->truthy();
}

Value method(const std::string& s, const char* name, CallArgs args = {}) {
  bool found = true;
  return call_method(Value::string(s), name, args, &found);
}

// jinja2's make_attrgetter: "a.b.0" walks items (item first, then attribute).
Value attribute_path(const Value& item, const Value& attribute) {
  if (attribute.is_integral()) return get_item(item, attribute);
  std::string path = to_str(attribute);
  Value cur = item;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    cur = get_item(cur, digits ? Value::integer(std::atoll(part.c_str())) : Value::string(part));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

// Sort key with jinja2's case folding (strings compare lowercased unless case_sensitive).
Value fold(const Value& v, bool case_sensitive) {
  if (case_sensitive || !v.is_string()) return v;
  return method(v.str(), "lower");
}

Value key_of(const Value& item, const Value* attribute, bool case_sensitive) {
  return fold(absent(attribute) ? item : attribute_path(item, *attribute), case_sensitive);
}

std::string do_title(const std::string& s) {
  std::string out;
  bool start = true;
  for (char32_t c : decode_utf8(s)) {
    bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c);
    if (sep) {
      append_utf8(out, c);
      start = true;
    } else {
      append_utf8(out, start ? py_upper(c) : py_lower(c));
      start = false;
    }
  }
  return out;
}

std::string do_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string do_indent(std::string s, const CallArgs& a) {
  const Value* width = arg(a, 0, "width");
  std::string indention =
      width && width->is_string() ? width->str() : std::string(width ? width->as_int() : 4, ' ');
  bool first = flag(arg(a, 1, "first"));
  bool blank = flag(arg(a, 2, "blank"));
  s += "\n";
  List lines = method(s, "splitlines").items();
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) rv += "\n" + indention;
      rv += lines[i].str();
    }
  } else {
    rv = lines.empty() ? "" : lines[0].str();
    for (size_t i = 1; i < lines.size(); ++i) {
      rv += "\n";
      if (!lines[i].str().empty()) rv += indention;
      rv += lines[i].str();
    }
  }
  if (first) rv = indention + rv;
  return rv;
}

Value do_int(const Value& v, const CallArgs& a) {
  const Value* def = arg(a, 0, "default");
  const Value* base_arg = arg(a, 1, "base");
  Value fallback = def ? *def : Value::integer(0);
  int base = base_arg && base_arg->is_integral() ? static_cast<int>(base_arg->as_int()) : 10;
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.kind() == Value::Kind::kFloat) {
    if (!std::isfinite(v.as_double())) return fallback;
    return Value::integer(static_cast<int64_t>(v.as_double()));
  }
  if (!v.is_string()) return fallback;
  std::string s = py_strip(v.str(), true, true, nullptr);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return fallback;
  char* end = nullptr;
  errno = 0;
  long long i = std::strtoll(s.c_str(), &end, base);
  if (errno == 0 && end && *end == '\0') return Value::integer(i);
  double d = std::strtod(s.c_str(), &end);
  if (end && *end == '\0' && std::isfinite(d)) return Value::integer(static_cast<int64_t>(d));
  return fallback;
}

Value do_float(const Value& v, const CallArgs& a) {
  const Value* def = arg(a, 0, "default");
  Value fallback = def ? *def : Value::number(0.0);
  if (v.is_number()) return Value::number(v.as_double());
  if (!v.is_string()) return fallback;
  std::string s = py_strip(v.str(), true, true, nullptr);
  if (s.empty()) return fallback;
  char* end = nullptr;
  double d = std::strtod(s.c_str(), &end);
  if (end && *end == '\0') return Value::number(d);
  return fallback;
}

Value do_tojson(const Value& v, const CallArgs& a) {
  // transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
  JsonOptions o;
  o.ensure_ascii = flag(arg(a, 0, "ensure_ascii"));
  const Value* indent = arg(a, 1, "indent");
  if (!absent(indent)) {
    o.has_indent = true;
    if (indent->is_string()) {
      o.indent = indent->str();
    } else {
      TESSERA_CHECK(indent->is_integral(), "tojson indent must be an integer or a string");
      o.indent.assign(static_cast<size_t>(std::max<int64_t>(0, indent->as_int())), ' ');
    }
    o.item_separator.assign(1, ',');
  }
  const Value* separators = arg(a, 2, "separators");
  if (!absent(separators)) {
    List seps = iterate(*separators);
    TESSERA_CHECK(seps.size() == 2 && seps[0].is_string() && seps[1].is_string(),
                  "tojson separators must be a pair of strings");
    o.item_separator = seps[0].str();
    o.key_separator = seps[1].str();
  }
  o.sort_keys = flag(arg(a, 3, "sort_keys"));
  return Value::string(to_json(v, o));
}

List select_items(Evaluator& ev, const Value& v, const CallArgs& a, bool by_attr, bool keep) {
  size_t first_test_arg = by_attr ? 1 : 0;
  const Value* attribute = by_attr ? arg(a, 0, "attribute") : nullptr;
  TESSERA_CHECK(!by_attr || attribute, "selectattr/rejectattr need an attribute name");
  const Value* test = a.args.size() > first_test_arg ? &a.args[first_test_arg] : nullptr;
  CallArgs test_args;
  for (size_t i = first_test_arg + 1; i < a.args.size(); ++i) test_args.args.push_back(a.args[i]);
  List out;
  for (const Value& item : iterate(v)) {
    Value subject = by_attr ? attribute_path(item, *attribute) : item;
    bool ok;
    if (test) {
      TESSERA_CHECK(test->is_string(), "test name must be a string");
      CallArgs copy = test_args;
      ok = apply_test(ev, test->str(), subject, copy);
    } else {
      ok = subject.truthy();
    }
    if (ok == keep) out.push_back(item);
  }
  return out;
}

List sorted(List items, bool reverse, bool case_sensitive, const Value* attribute) {
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& item : items)
    keyed.emplace_back(key_of(item, attribute, case_sensitive), std::move(item));
  std::stable_sort(keyed.begin(), keyed.end(), [reverse](const auto& x, const auto& y) {
    return reverse ? values_less(y.first, x.first) : values_less(x.first, y.first);
  });
  List out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return out;
}

}  // namespace

std::string percent_format(const std::string& fmt, const Value& args) {
  const List single = {args};
  const List& positional = args.is_tuple() ? args.items() : single;
  const Dict* mapping = args.is_dict() ? &args.dict() : nullptr;
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    TESSERA_CHECK(i + 1 < fmt.size(), "incomplete format");
    if (fmt[i + 1] == '%') {
      out += '%';
      ++i;
      continue;
    }
    size_t j = i + 1;
    const Value* value = nullptr;
    if (fmt[j] == '(') {
      size_t close = fmt.find(')', j);
      TESSERA_CHECK(close != std::string::npos, "incomplete format key");
      TESSERA_CHECK(mapping, "format requires a mapping");
      value = mapping->find(std::string_view(fmt).substr(j + 1, close - j - 1));
      TESSERA_CHECK(value, "format key '" << fmt.substr(j + 1, close - j - 1) << "' not found");
      j = close + 1;
    }
    std::string spec = "%";
    while (j < fmt.size() && std::string_view("-+ #0").find(fmt[j]) != std::string_view::npos) {
      spec += fmt[j++];
    }
    while (j < fmt.size() && (std::isdigit(static_cast<unsigned char>(fmt[j])) || fmt[j] == '.')) {
      spec += fmt[j++];
    }
    while (j < fmt.size() && (fmt[j] == 'h' || fmt[j] == 'l' || fmt[j] == 'L')) ++j;
    TESSERA_CHECK(j < fmt.size(), "incomplete format");
    const char conv = fmt[j];
    if (!value) {
      TESSERA_CHECK(next < positional.size(), "not enough arguments for format string");
      value = &positional[next++];
    }
    auto printf_append = [&out](const std::string& f, auto x) {
      int n = std::snprintf(nullptr, 0, f.c_str(), x);
      TESSERA_CHECK(n >= 0 && n < (1 << 20), "format field too wide: " << f);
      std::string tmp(static_cast<size_t>(n) + 1, '\0');
      std::snprintf(tmp.data(), tmp.size(), f.c_str(), x);
      tmp.pop_back();
      out += tmp;
    };
    if (conv == 's' || conv == 'r' || conv == 'a') {
      std::string text = conv == 's' ? to_str(*value) : to_repr(*value);
      // Width and precision count code points, as in Python.
      size_t dot = spec.find('.');
      bool left = spec.find('-') != std::string::npos;
      size_t width = 0;
      size_t k = 1;
      while (k < spec.size() && std::string_view("-+ #0").find(spec[k]) != std::string_view::npos)
        ++k;
      if (k < spec.size() && std::isdigit(static_cast<unsigned char>(spec[k]))) {
        width = std::strtoul(spec.c_str() + k, nullptr, 10);
      }
      if (dot != std::string::npos) {
        size_t precision = std::strtoul(spec.c_str() + dot + 1, nullptr, 10);
        std::vector<char32_t> cps = decode_utf8(text);
        if (cps.size() > precision) text = encode_utf8({cps.begin(), cps.begin() + precision});
      }
      size_t len = utf8_length(text);
      std::string pad(width > len ? width - len : 0, ' ');
      out += left ? text + pad : pad + text;
    } else if (std::string_view("diuxXoc").find(conv) != std::string_view::npos) {
      TESSERA_CHECK(value->is_number(),
                    "%" << conv << " format: a number is required, not " << value->type_name());
      long long n =
          value->is_integral() ? value->as_int() : static_cast<long long>(value->as_double());
      if (conv == 'c') {
        append_utf8(out, static_cast<char32_t>(n));
        continue;
      }
      spec += "ll";
      spec += conv == 'i' || conv == 'u' ? 'd' : conv;
      printf_append(spec, n);
    } else if (std::string_view("eEfFgG").find(conv) != std::string_view::npos) {
      TESSERA_CHECK(value->is_number(),
                    "%" << conv << " format: a number is required, not " << value->type_name());
      spec += conv;
      printf_append(spec, value->as_double());
    } else {
      TESSERA_FAIL("unsupported format character '" << conv << "'");
    }
    i = j;
  }
  TESSERA_CHECK(mapping || next >= positional.size() || positional.empty(),
                "not all arguments converted during string formatting");
  return out;
}

Value apply_filter(Evaluator& ev, const std::string& name, const Value& v, CallArgs& a) {
  if (name == "default" || name == "d") {
    const Value* def = arg(a, 0, "default_value");
    bool use_default = v.is_undefined() || (flag(arg(a, 1, "boolean")) && !v.truthy());
    if (!use_default) return v;
    return def ? *def : Value::string("");
  }
  if (name == "length" || name == "count") return Value::integer(length_of(v));
  if (name == "string") return Value::string(to_str(v));
  if (name == "safe") return v.is_undefined() ? Value::string("") : v;
  if (name == "trim") {
    const Value* chars = arg(a, 0, "chars");
    const std::string* set = nullptr;
    if (!absent(chars)) {
      TESSERA_CHECK(chars->is_string(), "trim chars must be a string");
      set = &chars->str();
    }
    return Value::string(py_strip(to_str(v), true, true, set));
  }
  if (name == "upper" || name == "lower" || name == "capitalize") {
    return method(to_str(v), name.c_str());
  }
  if (name == "title") return Value::string(do_title(to_str(v)));
  if (name == "escape" || name == "e" || name == "forceescape") {
    return Value::string(do_escape(to_str(v)));
  }
  if (name == "tojson") return do_tojson(v, a);
  if (name == "replace") {
    CallArgs args;
    args.args.push_back(Value::string(to_str(*arg(a, 0, "old"))));
    args.args.push_back(Value::string(to_str(*arg(a, 1, "new"))));
    const Value* count = arg(a, 2, "count");
    if (!absent(count)) args.args.push_back(*count);
    return method(to_str(v), "replace", args);
  }
  if (name == "join") {
    const Value* sep = arg(a, 0, "d");
    const Value* attribute = arg(a, 1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& item : iterate(v)) {
      if (!first) out += sep ? to_str(*sep) : "";
      first = false;
      out += to_str(absent(attribute) ? item : attribute_path(item, *attribute));
    }
    return Value::string(std::move(out));
  }
  if (name == "first" || name == "last") {
    List items = iterate(v);
    if (items.empty()) return Value::undefined("no " + name + " item, sequence was empty");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return Value::list(iterate(v));
  if (name == "items") {
    if (v.is_undefined()) return Value::list({});
    TESSERA_CHECK(v.is_dict(), "can only get item pairs from a mapping, not " << v.type_name());
    List out;
    for (const auto& [key, value] : v.dict().entries) out.push_back(Value::tuple({key, value}));
    return Value::list(std::move(out));
  }
  if (name == "int") return do_int(v, a);
  if (name == "float") return do_float(v, a);
  if (name == "abs") {
    TESSERA_CHECK(v.is_number(), "bad operand type for abs(): '" << v.type_name() << "'");
    if (v.is_integral()) return Value::integer(std::llabs(v.as_int()));
    return Value::number(std::fabs(v.as_double()));
  }
  if (name == "round") {
    const Value* precision = arg(a, 0, "precision");
    const Value* how = arg(a, 1, "method");
    int64_t p = precision ? precision->as_int() : 0;
    std::string m = how ? to_str(*how) : "common";
    TESSERA_CHECK(v.is_number(), "round() needs a number, not " << v.type_name());
    if (m == "common" && v.is_integral()) return Value::integer(v.as_int());
    double scale = std::pow(10.0, static_cast<double>(p));
    double x = v.as_double() * scale;
    double r = m == "floor" ? std::floor(x) : m == "ceil" ? std::ceil(x) : std::nearbyint(x);
    return Value::number(r / scale);
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::vector<char32_t> cps = decode_utf8(v.str());
      std::reverse(cps.begin(), cps.end());
      return Value::string(encode_utf8(cps));
    }
    List items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::list(std::move(items));
  }
  if (name == "sort") {
    return Value::list(sorted(iterate(v), flag(arg(a, 0, "reverse")),
                              flag(arg(a, 1, "case_sensitive")), arg(a, 2, "attribute")));
  }
  if (name == "dictsort") {
    TESSERA_CHECK(v.is_dict(), "dictsort needs a mapping, not " << v.type_name());
    const Value* by = arg(a, 1, "by");
    bool by_value = by && to_str(*by) == "value";
    List pairs;
    for (const auto& [key, value] : v.dict().entries) pairs.push_back(Value::tuple({key, value}));
    Value index = Value::integer(by_value ? 1 : 0);
    return Value::list(sorted(std::move(pairs), flag(arg(a, 2, "reverse")),
                              flag(arg(a, 0, "case_sensitive")), &index));
  }
  if (name == "unique") {
    bool cs = flag(arg(a, 0, "case_sensitive"));
    const Value* attribute = arg(a, 1, "attribute");
    List out;
    List seen;
    for (const Value& item : iterate(v)) {
      Value key = key_of(item, attribute, cs);
      bool dup = false;
      for (const Value& s : seen) dup = dup || values_equal(s, key);
      if (dup) continue;
      seen.push_back(key);
      out.push_back(item);
    }
    return Value::list(std::move(out));
  }
  if (name == "min" || name == "max") {
    List items = iterate(v);
    if (items.empty()) return Value::undefined("no " + name + " item, sequence was empty");
    bool cs = flag(arg(a, 0, "case_sensitive"));
    const Value* attribute = arg(a, 1, "attribute");
    size_t best = 0;
    Value best_key = key_of(items[0], attribute, cs);
    for (size_t i = 1; i < items.size(); ++i) {
      Value k = key_of(items[i], attribute, cs);
      if (name == "min" ? values_less(k, best_key) : values_less(best_key, k)) {
        best = i;
        best_key = k;
      }
    }
    return items[best];
  }
  if (name == "sum") {
    const Value* attribute = arg(a, 0, "attribute");
    const Value* start = arg(a, 1, "start");
    Value total = start ? *start : Value::integer(0);
    for (const Value& item : iterate(v)) {
      Value x = absent(attribute) ? item : attribute_path(item, *attribute);
      TESSERA_CHECK(total.is_number() && x.is_number(),
                    "sum() needs numbers, got " << x.type_name());
      if (total.is_integral() && x.is_integral()) {
        total = Value::integer(total.as_int() + x.as_int());
      } else {
        total = Value::number(total.as_double() + x.as_double());
      }
    }
    return total;
  }
  if (name == "map") {
    List out;
    const Value* attribute = arg(a, kKeywordOnly, "attribute");
    if (attribute) {
      const Value* def = arg(a, kKeywordOnly, "default");
      for (const Value& item : iterate(v)) {
        Value r = attribute_path(item, *attribute);
        out.push_back(r.is_undefined() && def ? *def : r);
      }
      return Value::list(std::move(out));
    }
    TESSERA_CHECK(!a.args.empty() && a.args[0].is_string(),
                  "map needs a filter name or attribute=");
    std::string filter = a.args[0].str();
    for (const Value& item : iterate(v)) {
      CallArgs rest;
      rest.args.assign(a.args.begin() + 1, a.args.end());
      rest.kwargs = a.kwargs;
      out.push_back(apply_filter(ev, filter, item, rest));
    }
    return Value::list(std::move(out));
  }
  if (name == "select" || name == "reject") {
    return Value::list(select_items(ev, v, a, false, name == "select"));
  }
  if (name == "selectattr" || name == "rejectattr") {
    return Value::list(select_items(ev, v, a, true, name == "selectattr"));
  }
  if (name == "attr") {
    const Value* attribute = arg(a, 0, "name");
    TESSERA_CHECK(attribute && attribute->is_string(), "attr needs an attribute name");
    if (v.is_dict() && !has_method(v, attribute->str())) {
      return Value::undefined("'dict object' has no attribute '" + attribute->str() + "'");
    }
    return get_attr(v, attribute->str());
  }
  if (name == "indent") return Value::string(do_indent(to_str(v), a));
  if (name == "format") {
    TESSERA_CHECK(a.args.empty() || a.kwargs.empty(),
                  "format filter takes positional or keyword arguments, not both");
    if (!a.kwargs.empty()) {
      Dict d;
      for (const auto& [key, value] : a.kwargs) d.set(Value::string(key), value);
      return Value::string(percent_format(to_str(v), Value::dict(std::move(d))));
    }
    return Value::string(percent_format(to_str(v), Value::tuple(a.args)));
  }
  if (name == "wordcount") {
    int64_t words = 0;
    bool in_word = false;
    for (char32_t c : decode_utf8(to_str(v))) {
      bool w = c == '_' || py_isalnum(c);
      if (w && !in_word) ++words;
      in_word = w;
    }
    return Value::integer(words);
  }
  TESSERA_FAIL("no filter named '" << name << "'");
}

bool has_filter(const std::string& name) {
  static const std::set<std::string, std::less<>> kFilters = {
      "abs",    "attr",   "capitalize", "count",      "d",           "default", "dictsort",
      "e",      "escape", "first",      "float",      "forceescape", "indent",  "int",
      "items",  "join",   "last",       "length",     "list",        "lower",   "map",
      "max",    "min",    "reject",     "rejectattr", "replace",     "reverse", "round",
      "safe",   "select", "selectattr", "sort",       "string",      "sum",     "title",
      "tojson", "trim",   "unique",     "upper",      "wordcount"};
  return kFilters.count(name) > 0;
}

}  // namespace tessera::jinja
