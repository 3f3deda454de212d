// Jinja2 parser: tokens to a syntax tree, following jinja2's grammar and operator precedence.
#include <initializer_list>

#include "io/jinja_internal.h"

namespace tessera::jinja {
namespace {

// Deeper nesting than this (of statements, parentheses, unary operators) is refused, so that a
// hostile template cannot exhaust the stack.
constexpr int kMaxNesting = 200;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  std::unique_ptr<Program> run() {
    auto program = std::make_unique<Program>();
    std::string end;
    program->body = parse_body({}, &end);
    return program;
  }

 private:
  // ---- token helpers ----

  const Token& peek(size_t k = 0) const {
    size_t i = std::min(pos_ + k, toks_.size() - 1);
    return toks_[i];
  }
  const Token& next() {
    const Token& t = toks_[pos_];
    if (pos_ + 1 < toks_.size()) ++pos_;
    return t;
  }
  bool is_op(std::string_view op, size_t k = 0) const {
    return peek(k).kind == TokKind::kOp && peek(k).text == op;
  }
  bool is_name(std::string_view name, size_t k = 0) const {
    return peek(k).kind == TokKind::kName && peek(k).text == name;
  }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }

  static std::string describe(const Token& t) {
    switch (t.kind) {
      case TokKind::kText:
        return "template data";
      case TokKind::kVarBegin:
        return "'{{'";
      case TokKind::kVarEnd:
        return "end of print statement";
      case TokKind::kBlockBegin:
        return "'{%'";
      case TokKind::kBlockEnd:
        return "end of statement block";
      case TokKind::kString:
        return "string";
      case TokKind::kInt:
      case TokKind::kFloat:
        return "number";
      case TokKind::kEof:
        return "end of template";
      default:
        return "'" + t.text + "'";
    }
  }

  [[noreturn]] void fail(const Token& t, const std::string& msg) const {
    TESSERA_FAIL("jinja template syntax error at line " << t.line << ", column " << t.col << ": "
                                                        << msg);
  }

  void expect_op(std::string_view op) {
    if (!skip_op(op)) fail(peek(), "expected '" + std::string(op) + "', got " + describe(peek()));
  }
  std::string expect_name() {
    if (peek().kind != TokKind::kName) fail(peek(), "expected a name, got " + describe(peek()));
    return next().text;
  }
  void expect_block_end() {
    if (peek().kind != TokKind::kBlockEnd) {
      fail(peek(), "expected end of statement block, got " + describe(peek()));
    }
    next();
  }

  ExprPtr node(ExprKind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->col = at.col;
    return e;
  }

  // ---- statements ----

  // Parses until a block tag whose name is in `ends`; consumes "{%" and that name and stores it.
  Body parse_body(std::initializer_list<std::string_view> ends, std::string* end) {
    Body body;
    while (true) {
      const Token& t = peek();
      if (t.kind == TokKind::kEof) {
        if (ends.size() == 0) return body;
        std::string expected;
        for (std::string_view e : ends)
          expected += (expected.empty() ? "'" : " or '") + std::string(e) + "'";
        fail(t, "unexpected end of template, expected " + expected);
      }
      if (t.kind == TokKind::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kText;
        s->line = t.line;
        s->text = next().text;
        body.push_back(std::move(s));
      } else if (t.kind == TokKind::kVarBegin) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kOutput;
        s->line = next().line;
        s->expr = parse_tuple(false, true, {});
        if (peek().kind != TokKind::kVarEnd) {
          fail(peek(), "expected end of print statement, got " + describe(peek()));
        }
        next();
        body.push_back(std::move(s));
      } else if (t.kind == TokKind::kBlockBegin) {
        const Token& name = peek(1);
        if (name.kind != TokKind::kName) fail(name, "expected a tag name, got " + describe(name));
        for (std::string_view e : ends) {
          if (name.text == e) {
            next();
            *end = next().text;
            return body;
          }
        }
        next();
        body.push_back(parse_statement());
      } else {
        fail(t, "unexpected " + describe(t));
      }
    }
  }

  // Counts nesting while a recursive parse function runs.
  class NestingGuard {
   public:
    NestingGuard(Parser& p, const Token& at) : p_(p) {
      if (++p_.nesting_ > kMaxNesting) p_.fail(at, "template is nested too deeply");
    }
    ~NestingGuard() { --p_.nesting_; }
    NestingGuard(const NestingGuard&) = delete;
    NestingGuard& operator=(const NestingGuard&) = delete;

   private:
    Parser& p_;
  };

  std::unique_ptr<Stmt> parse_statement() {
    NestingGuard guard(*this, peek());
    const Token& tag = next();
    auto s = std::make_unique<Stmt>();
    s->line = tag.line;
    const std::string& name = tag.text;
    if (name == "if") {
      s->kind = StmtKind::kIf;
      std::string end = "elif";
      while (end == "elif") {
        ExprPtr cond = parse_tuple(false, true, {});
        expect_block_end();
        Body body = parse_body({"elif", "else", "endif"}, &end);
        s->branches.emplace_back(std::move(cond), std::move(body));
      }
      if (end == "else") {
        expect_block_end();
        s->else_body = parse_body({"endif"}, &end);
      }
      expect_block_end();
    } else if (name == "for") {
      s->kind = StmtKind::kFor;
      s->targets = parse_target_names("in");
      if (!skip_name("in")) fail(peek(), "expected 'in', got " + describe(peek()));
      s->expr = parse_tuple(false, false, {"recursive"});
      if (skip_name("if")) s->cond = parse_expression(true);
      if (is_name("recursive")) fail(peek(), "recursive loops are not supported");
      expect_block_end();
      ++loop_depth_;
      std::string end;
      s->body = parse_body({"endfor", "else"}, &end);
      --loop_depth_;
      if (end == "else") {
        expect_block_end();
        s->else_body = parse_body({"endfor"}, &end);
      }
      expect_block_end();
    } else if (name == "set") {
      if (peek().kind == TokKind::kName && is_op(".", 1)) {
        s->targets.push_back(next().text);
        next();
        s->attr = expect_name();
      } else {
        s->targets = parse_target_names("=");
      }
      if (skip_op("=")) {
        s->kind = StmtKind::kSet;
        s->expr = parse_tuple(false, true, {});
        expect_block_end();
      } else {
        s->kind = StmtKind::kSetBlock;
        if (!s->attr.empty() || s->targets.size() != 1) {
          fail(peek(), "a block assignment needs a single name");
        }
        if (is_op("|")) s->filter = parse_filter_chain();
        expect_block_end();
        std::string end;
        s->body = parse_body({"endset"}, &end);
        expect_block_end();
      }
    } else if (name == "macro") {
      s->kind = StmtKind::kMacro;
      s->targets.push_back(expect_name());
      expect_op("(");
      while (!skip_op(")")) {
        if (!s->params.empty()) expect_op(",");
        if (skip_op(")")) break;
        std::string param = expect_name();
        ExprPtr def;
        if (skip_op("=")) def = parse_expression(true);
        s->params.emplace_back(std::move(param), std::move(def));
      }
      expect_block_end();
      int saved = loop_depth_;
      loop_depth_ = 0;
      std::string end;
      s->body = parse_body({"endmacro"}, &end);
      loop_depth_ = saved;
      expect_block_end();
    } else if (name == "with") {
      s->kind = StmtKind::kWith;
      while (peek().kind != TokKind::kBlockEnd) {
        if (!s->params.empty()) expect_op(",");
        std::string var = expect_name();
        expect_op("=");
        s->params.emplace_back(std::move(var), parse_expression(true));
      }
      expect_block_end();
      std::string end;
      s->body = parse_body({"endwith"}, &end);
      expect_block_end();
    } else if (name == "filter") {
      s->kind = StmtKind::kFilterBlock;
      s->filter = parse_filter_chain(false);
      expect_block_end();
      std::string end;
      s->body = parse_body({"endfilter"}, &end);
      expect_block_end();
    } else if (name == "generation") {
      s->kind = StmtKind::kScope;
      expect_block_end();
      std::string end;
      s->body = parse_body({"endgeneration"}, &end);
      expect_block_end();
    } else if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail(tag, "'" + name + "' outside of a loop");
      s->kind = name == "break" ? StmtKind::kBreak : StmtKind::kContinue;
      expect_block_end();
    } else {
      fail(tag, "encountered unknown tag '" + name + "'");
    }
    return s;
  }

  // Names for a for-loop or set target: "x", "k, v" or "(k, v)".
  std::vector<std::string> parse_target_names(std::string_view stop) {
    std::vector<std::string> names;
    bool paren = skip_op("(");
    while (true) {
      names.push_back(expect_name());
      if (!skip_op(",")) break;
      if (is_name(stop) || is_op(stop) || is_op(")")) break;
    }
    if (paren) expect_op(")");
    return names;
  }

  // "| f(args) | g" applied to a placeholder (null) subject, for set and filter blocks.
  ExprPtr parse_filter_chain(bool leading_pipe = true) {
    ExprPtr subject;
    bool first = true;
    while (first || is_op("|")) {
      if (!first || leading_pipe) expect_op("|");
      first = false;
      subject = parse_filter(std::move(subject), peek());
    }
    return subject;
  }

  // ---- expressions ----

  bool is_tuple_end(const std::vector<std::string_view>& extra) const {
    const Token& t = peek();
    if (t.kind == TokKind::kVarEnd || t.kind == TokKind::kBlockEnd || t.kind == TokKind::kEof) {
      return true;
    }
    if (is_op(")")) return true;
    for (std::string_view e : extra) {
      if (is_name(e)) return true;
    }
    return false;
  }

  ExprPtr parse_tuple(bool explicit_parens, bool with_condexpr,
                      const std::vector<std::string_view>& extra_end) {
    const Token start = peek();
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) fail(peek(), "expected an expression, got " + describe(peek()));
    }
    ExprPtr e = node(ExprKind::kTuple, start);
    e->args = std::move(items);
    return e;
  }

  ExprPtr parse_expression(bool with_condexpr) {
    NestingGuard guard(*this, peek());
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      ExprPtr e = node(ExprKind::kCond, next());
      ExprPtr cond = parse_or();
      ExprPtr otherwise;
      if (skip_name("else")) otherwise = parse_condexpr();
      e->args.push_back(std::move(expr));
      e->args.push_back(std::move(cond));
      e->args.push_back(std::move(otherwise));
      expr = std::move(e);
    }
    return expr;
  }

  ExprPtr binary_node(ExprKind kind, const Token& at, ExprPtr left, ExprPtr right) {
    ExprPtr e = node(kind, at);
    e->args.push_back(std::move(left));
    e->args.push_back(std::move(right));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      const Token& at = next();
      left = binary_node(ExprKind::kOr, at, std::move(left), parse_and());
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      const Token& at = next();
      left = binary_node(ExprKind::kAnd, at, std::move(left), parse_not());
    }
    return left;
  }

  ExprPtr parse_not() {
    NestingGuard guard(*this, peek());
    if (is_name("not")) {
      ExprPtr e = node(ExprKind::kNot, next());
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Token start = peek();
    ExprPtr first = parse_math1();
    ExprPtr e;
    while (true) {
      BinOp op;
      if (is_op("==")) {
        op = BinOp::kEq;
      } else if (is_op("!=")) {
        op = BinOp::kNe;
      } else if (is_op("<")) {
        op = BinOp::kLt;
      } else if (is_op("<=")) {
        op = BinOp::kLe;
      } else if (is_op(">")) {
        op = BinOp::kGt;
      } else if (is_op(">=")) {
        op = BinOp::kGe;
      } else if (is_name("in")) {
        op = BinOp::kIn;
      } else if (is_name("not") && is_name("in", 1)) {
        next();
        op = BinOp::kNotIn;
      } else {
        break;
      }
      next();
      if (!e) {
        e = node(ExprKind::kCompare, start);
        e->args.push_back(std::move(first));
      }
      e->ops.push_back(op);
      e->args.push_back(parse_math1());
    }
    return e ? std::move(e) : std::move(first);
  }

  ExprPtr arith(BinOp op, const Token& at, ExprPtr left, ExprPtr right) {
    ExprPtr e = binary_node(ExprKind::kBinary, at, std::move(left), std::move(right));
    e->op = op;
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& at = next();
      BinOp op = at.text == "+" ? BinOp::kAdd : BinOp::kSub;
      left = arith(op, at, std::move(left), parse_concat());
    }
    return left;
  }

  ExprPtr parse_concat() {
    const Token start = peek();
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    ExprPtr e = node(ExprKind::kConcat, start);
    e->args.push_back(std::move(first));
    while (skip_op("~")) e->args.push_back(parse_math2());
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& at = next();
      BinOp op = at.text == "*"    ? BinOp::kMul
                 : at.text == "/"  ? BinOp::kDiv
                 : at.text == "//" ? BinOp::kFloorDiv
                                   : BinOp::kMod;
      left = arith(op, at, std::move(left), parse_pow());
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const Token& at = next();
      left = arith(BinOp::kPow, at, std::move(left), parse_unary(true));
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    NestingGuard guard(*this, peek());
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Token& at = next();
      e = node(at.text == "-" ? ExprKind::kNeg : ExprKind::kPos, at);
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    if (t.kind == TokKind::kName) {
      next();
      ExprPtr e = node(ExprKind::kLiteral, t);
      if (t.text == "true" || t.text == "True") {
        e->value = Value::boolean(true);
      } else if (t.text == "false" || t.text == "False") {
        e->value = Value::boolean(false);
      } else if (t.text == "none" || t.text == "None") {
        e->value = Value::none();
      } else {
        e->kind = ExprKind::kName;
        e->name = t.text;
      }
      return e;
    }
    if (t.kind == TokKind::kString) {
      ExprPtr e = node(ExprKind::kLiteral, t);
      std::string s;
      while (peek().kind == TokKind::kString) s += next().text;
      e->value = Value::string(std::move(s));
      return e;
    }
    if (t.kind == TokKind::kInt || t.kind == TokKind::kFloat) {
      ExprPtr e = node(ExprKind::kLiteral, t);
      e->value =
          t.kind == TokKind::kInt ? Value::integer(t.int_value) : Value::number(t.float_value);
      next();
      return e;
    }
    if (is_op("(")) {
      next();
      ExprPtr e = parse_tuple(true, true, {});
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      ExprPtr e = node(ExprKind::kList, next());
      while (!is_op("]")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("]")) break;
        e->args.push_back(parse_expression(true));
      }
      expect_op("]");
      return e;
    }
    if (is_op("{")) {
      ExprPtr e = node(ExprKind::kDict, next());
      while (!is_op("}")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("}")) break;
        e->args.push_back(parse_expression(true));
        expect_op(":");
        e->args.push_back(parse_expression(true));
      }
      expect_op("}");
      return e;
    }
    fail(t, "unexpected " + describe(t));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op(".") || is_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        next();
        e = parse_filter(std::move(e), peek());
      } else if (is_name("is")) {
        e = parse_test(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr obj) {
    const Token& at = next();
    if (at.text == ".") {
      const Token& t = peek();
      if (t.kind == TokKind::kName) {
        ExprPtr e = node(ExprKind::kAttr, t);
        e->name = next().text;
        e->args.push_back(std::move(obj));
        return e;
      }
      if (t.kind == TokKind::kInt) {
        ExprPtr e = node(ExprKind::kItem, t);
        e->args.push_back(std::move(obj));
        ExprPtr key = node(ExprKind::kLiteral, t);
        key->value = Value::integer(next().int_value);
        e->args.push_back(std::move(key));
        return e;
      }
      fail(t, "expected name or number after '.', got " + describe(t));
    }
    std::vector<ExprPtr> subs;
    while (!is_op("]")) {
      if (!subs.empty()) expect_op(",");
      subs.push_back(parse_subscribed());
    }
    expect_op("]");
    if (subs.empty()) fail(at, "expected a subscript");
    if (subs.size() == 1 && subs[0]->kind == ExprKind::kSlice) {
      subs[0]->args.insert(subs[0]->args.begin(), std::move(obj));
      return std::move(subs[0]);
    }
    ExprPtr e = node(ExprKind::kItem, at);
    e->args.push_back(std::move(obj));
    if (subs.size() == 1) {
      e->args.push_back(std::move(subs[0]));
    } else {
      ExprPtr tuple = node(ExprKind::kTuple, at);
      tuple->args = std::move(subs);
      e->args.push_back(std::move(tuple));
    }
    return e;
  }

  // One subscript: an expression or a slice "start:stop:step" with optional parts.
  ExprPtr parse_subscribed() {
    const Token at = peek();
    ExprPtr start;
    if (!is_op(":")) {
      start = parse_expression(true);
      if (!is_op(":")) return start;
    }
    next();  // ':'
    ExprPtr e = node(ExprKind::kSlice, at);
    e->args.push_back(std::move(start));
    e->args.push_back(is_op("]") || is_op(",") || is_op(":") ? nullptr : parse_expression(true));
    ExprPtr step;
    if (skip_op(":") && !is_op("]") && !is_op(",")) step = parse_expression(true);
    e->args.push_back(std::move(step));
    return e;
  }

  // "(a, b, key=value)" into e->args (after what is already there) and e->kwargs.
  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) fail(peek(), "*args and **kwargs calls are not supported");
      if (peek().kind == TokKind::kName && is_op("=", 1)) {
        std::string key = next().text;
        next();
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e.kwargs.empty()) fail(peek(), "positional argument follows keyword argument");
        e.args.push_back(parse_expression(true));
      }
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    ExprPtr e = node(ExprKind::kCall, peek());
    e->args.push_back(std::move(callee));
    parse_call_args(*e);
    return e;
  }

  std::string parse_dotted_name() {
    std::string name = expect_name();
    while (is_op(".") && peek(1).kind == TokKind::kName) {
      next();
      name += "." + next().text;
    }
    return name;
  }

  ExprPtr parse_filter(ExprPtr subject, const Token& at) {
    ExprPtr e = node(ExprKind::kFilter, at);
    e->name = parse_dotted_name();
    e->args.push_back(std::move(subject));
    if (is_op("(")) parse_call_args(*e);
    return e;
  }

  ExprPtr parse_test(ExprPtr subject) {
    ExprPtr e = node(ExprKind::kTest, next());
    e->negated = skip_name("not");
    e->name = parse_dotted_name();
    e->args.push_back(std::move(subject));
    const Token& t = peek();
    if (is_op("(")) {
      parse_call_args(*e);
    } else if ((t.kind == TokKind::kName || t.kind == TokKind::kString || t.kind == TokKind::kInt ||
                t.kind == TokKind::kFloat || is_op("(") || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail(t, "you cannot chain multiple tests with is");
      e->args.push_back(parse_postfix(parse_primary()));
    }
    return e;
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int loop_depth_ = 0;
  int nesting_ = 0;
};

}  // namespace

std::unique_ptr<Program> parse_template(std::string_view source) {
  return Parser(tokenize(source)).run();
}

}  // namespace tessera::jinja
