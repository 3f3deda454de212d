// Internals of the Jinja2 interpreter (io/jinja.h): values, the syntax tree, and the entry points
// shared by the lexer, parser, evaluator and builtins. Not part of the public interface.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernels/error.h"

namespace tessera::jinja {

class Value;
class Evaluator;
using List = std::vector<Value>;

struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
};

// A Python-like value. Strings, lists and dicts are immutable and shared; namespaces are shared and
// mutable (Jinja's namespace() is the one mutable object a sandboxed template can have).
class Value {
 public:
  enum class Kind : uint8_t {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kCallable,
  };

  Value() = default;  // undefined
  static Value undefined(std::string hint);
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value number(double f);
  static Value string(std::string s);
  static Value list(List items);
  static Value tuple(List items);  // a list that prints as (a, b) and never equals a list
  static Value dict(struct Dict d);
  static Value make_namespace(struct Dict d);
  static Value callable(std::string name, std::function<Value(Evaluator&, CallArgs&)> fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_tuple() const { return kind_ == Kind::kList && b_; }
  // bool counts as a number, as in Python.
  bool is_number() const {
    return kind_ == Kind::kBool || kind_ == Kind::kInt || kind_ == Kind::kFloat;
  }
  bool is_integral() const { return kind_ == Kind::kBool || kind_ == Kind::kInt; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return kind_ == Kind::kBool ? (b_ ? 1 : 0) : i_; }
  double as_double() const { return kind_ == Kind::kFloat ? f_ : static_cast<double>(as_int()); }
  const std::string& str() const;   // kString only
  const List& items() const;        // kList only
  const struct Dict& dict() const;  // kDict or kNamespace
  struct Dict& ns() const;          // kNamespace only
  const struct Callable& fn() const;
  const std::string& undefined_hint() const;  // kUndefined only; may be empty

  bool truthy() const;
  std::string type_name() const;  // Python-ish, for error messages

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;  // the bool, or for a list whether it is a tuple
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<void> p_;
};

// An insertion-ordered mapping, like a Python dict.
struct Dict {
  std::vector<std::pair<Value, Value>> entries;
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);
};

struct Callable {
  std::string name;
  std::function<Value(Evaluator&, CallArgs&)> fn;
};

// ---- value helpers (jinja_value.cpp) -----------------------------------------------------------

// Python str(): what {{ x }} prints. Undefined prints as the empty string.
std::string to_str(const Value& v);
// Python repr() (strings quoted), used inside list and dict printing.
std::string to_repr(const Value& v);
std::string float_repr(double d);
bool values_equal(const Value& a, const Value& b);
// Python a < b; throws on incomparable types.
bool values_less(const Value& a, const Value& b);

struct JsonOptions {
  bool ensure_ascii = false;
  bool sort_keys = false;
  bool has_indent = false;
  std::string indent;
  std::string item_separator = ", ";
  std::string key_separator = ": ";
};
// Python json.dumps with the given options.
std::string to_json(const Value& v, const JsonOptions& options);

// UTF-8 helpers: strings are UTF-8 and measured in code points like Python's str.
bool is_ascii(std::string_view s);
std::vector<char32_t> decode_utf8(std::string_view s);
void append_utf8(std::string& out, char32_t c);
std::string encode_utf8(const std::vector<char32_t>& cps);
bool py_isspace(char32_t c);
// Python's str.isalnum for ASCII and common scripts (letters of cased scripts, CJK, Hangul,
// Hebrew, Arabic, Devanagari, Thai); other code points count as not alphanumeric.
bool py_isalnum(char32_t c);
char32_t py_lower(char32_t c);
char32_t py_upper(char32_t c);
size_t utf8_length(std::string_view s);
// Strips Python whitespace (or the code points in `chars` when given) from the ends.
std::string py_strip(std::string_view s, bool left, bool right, const std::string* chars);

// ---- lexer (jinja_lexer.cpp) -------------------------------------------------------------------

enum class TokKind : uint8_t {
  kText,
  kVarBegin,
  kVarEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEof,
};

struct Token {
  TokKind kind = TokKind::kEof;
  std::string text;  // text data, name, decoded string literal, or operator
  int line = 0;
  int col = 0;
  int64_t int_value = 0;
  double float_value = 0;
};

// Tokenizes with trim_blocks and lstrip_blocks on and keep_trailing_newline off, like
// transformers' chat-template environment. Throws on unterminated tags, comments and strings.
std::vector<Token> tokenize(std::string_view source);

// ---- syntax tree (jinja_parser.cpp) ------------------------------------------------------------

enum class ExprKind : uint8_t {
  kLiteral,
  kName,
  kList,
  kTuple,
  kDict,    // args alternate key, value
  kAttr,    // args[0].name
  kItem,    // args[0][args[1]]
  kSlice,   // args[0][args[1]:args[2]:args[3]], null for omitted parts
  kCall,    // args[0](args[1:], kwargs)
  kFilter,  // args[0] | name(args[1:], kwargs); args[0] is null in a filter block
  kTest,    // args[0] is name(args[1:]); negated for "is not"
  kNeg,
  kPos,
  kNot,
  kAnd,
  kOr,
  kBinary,   // args[0] op args[1]
  kCompare,  // args[0] ops[0] args[1] ops[1] args[2] ...
  kCond,     // args[0] if args[1] else args[2] (args[2] may be null)
  kConcat,   // args joined with ~
};

enum class BinOp : uint8_t {
  kAdd,
  kSub,
  kMul,
  kDiv,
  kFloorDiv,
  kMod,
  kPow,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kIn,
  kNotIn,
};

struct Expr {
  ExprKind kind = ExprKind::kLiteral;
  int line = 0;
  int col = 0;
  Value value;
  std::string name;
  BinOp op = BinOp::kAdd;
  std::vector<BinOp> ops;
  bool negated = false;
  std::vector<std::unique_ptr<Expr>> args;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
};
using ExprPtr = std::unique_ptr<Expr>;

enum class StmtKind : uint8_t {
  kText,
  kOutput,
  kIf,
  kFor,
  kSet,       // targets = value, or targets[0].attr = value for a namespace
  kSetBlock,  // {% set x %}body{% endset %}, optionally through `filter`
  kMacro,
  kWith,
  kFilterBlock,
  kScope,  // a body rendered in place ({% generation %})
  kBreak,
  kContinue,
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  StmtKind kind = StmtKind::kText;
  int line = 0;
  std::string text;
  ExprPtr expr;                                         // output value, set value, for iterable
  ExprPtr cond;                                         // for-loop filter
  ExprPtr filter;                                       // set-block and filter-block filter chain
  std::vector<std::string> targets;                     // for/set names, macro name
  std::string attr;                                     // namespace attribute for set
  std::vector<std::pair<ExprPtr, Body>> branches;       // if / elif
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro params, with assignments
  Body body;
  Body else_body;
};

struct Program {
  Body body;
};

std::unique_ptr<Program> parse_template(std::string_view source);

// ---- evaluator (jinja_eval.cpp) ----------------------------------------------------------------

// Thrown by raise_exception(): render() turns it into an Error carrying exactly the message.
struct RaisedException {
  std::string message;
};

// One scope of variables (a loop iteration, a macro call, the template's top level).
struct Frame {
  std::vector<std::pair<std::string, Value>> vars;
  Value* find(std::string_view name);
  void set(const std::string& name, Value v);
};

class Evaluator {
 public:
  explicit Evaluator(std::vector<std::pair<std::string, Value>> context);
  std::string run(const Program& program);
  Value eval(const Expr& e);
  Value call(const Value& callee, CallArgs& args);
  // `closure` holds the variables of the scopes the macro was defined in (empty at top level).
  Value call_macro(const Stmt& macro, const Frame& closure, CallArgs& args);
  int line() const { return line_; }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Flow exec(const Body& body, std::string& out);
  Flow exec(const Stmt& s, std::string& out);
  Flow exec_for(const Stmt& s, std::string& out);
  void assign(const Stmt& s, Value v);
  Value lookup(const std::string& name);
  Value eval_call(const Expr& e);
  Value eval_binary(BinOp op, const Value& a, const Value& b);
  void collect_args(const Expr& e, size_t first, CallArgs& out);

  Frame context_;
  Frame globals_;
  std::vector<Frame*> scope_;
  int line_ = 0;
  int macro_depth_ = 0;
  int eval_depth_ = 0;
};

// ---- builtins (jinja_builtins.cpp, jinja_filters.cpp) ------------------------------------------

// Jinja's obj.attr and obj[key]: missing attributes and items are undefined, never errors, except
// that any access on an undefined value fails (like jinja2's default Undefined).
Value get_attr(const Value& obj, const std::string& name);
Value get_item(const Value& obj, const Value& key);
Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
// Calls a method of a string, list or dict; sets *found to false when there is no such method.
Value call_method(const Value& obj, const std::string& name, CallArgs& args, bool* found);
bool has_method(const Value& obj, const std::string& name);
Value apply_filter(Evaluator& ev, const std::string& name, const Value& v, CallArgs& args);
bool apply_test(Evaluator& ev, const std::string& name, const Value& v, CallArgs& args);
bool has_test(const std::string& name);
bool has_filter(const std::string& name);
// Python's printf-style `fmt % args` (args: a tuple of values, a dict for %(key)s, or one value).
std::string percent_format(const std::string& fmt, const Value& args);
// Jinja globals: range, namespace, dict, raise_exception, strftime_now. Undefined if unknown.
Value builtin_global(const std::string& name);
// Python iteration: list items, dict keys, string characters; undefined iterates as empty.
List iterate(const Value& v);
int64_t length_of(const Value& v);

// Argument helper for builtins: positional-or-keyword parameter `index`/`name`, or null.
// Pass kKeywordOnly as index for a keyword-only parameter.
constexpr size_t kKeywordOnly = static_cast<size_t>(-1);
const Value* arg(const CallArgs& a, size_t index, std::string_view name);

}  // namespace tessera::jinja
