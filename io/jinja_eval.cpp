// Jinja2 evaluator: runs the syntax tree against a context with jinja2's scoping (a for-loop body
// gets a fresh scope each iteration; if/elif do not create scopes; macros see the template's
// top-level names and their arguments).
#include <cmath>

#include "io/jinja_internal.h"

namespace tessera::jinja {

namespace {
constexpr int kMaxMacroDepth = 128;
constexpr int kMaxExprDepth = 1000;
}  // namespace

Value* Frame::find(std::string_view name) {
  for (auto& [k, v] : vars) {
    if (k == name) return &v;
  }
  return nullptr;
}

void Frame::set(const std::string& name, Value v) {
  if (Value* slot = find(name)) {
    *slot = std::move(v);
  } else {
    vars.emplace_back(name, std::move(v));
  }
}

Evaluator::Evaluator(std::vector<std::pair<std::string, Value>> context) {
  context_.vars = std::move(context);
  scope_ = {&context_, &globals_};
}

std::string Evaluator::run(const Program& program) {
  std::string out;
  exec(program.body, out);
  return out;
}

Value Evaluator::lookup(const std::string& name) {
  for (auto it = scope_.rbegin(); it != scope_.rend(); ++it) {
    if (Value* v = (*it)->find(name)) return *v;
  }
  Value v = builtin_global(name);
  if (v.is_undefined()) return Value::undefined("'" + name + "' is undefined");
  return v;
}

// ---- statements --------------------------------------------------------------------------------

Evaluator::Flow Evaluator::exec(const Body& body, std::string& out) {
  for (const auto& s : body) {
    Flow f = exec(*s, out);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Evaluator::Flow Evaluator::exec(const Stmt& s, std::string& out) {
  line_ = s.line;
  switch (s.kind) {
    case StmtKind::kText:
      out += s.text;
      return Flow::kNormal;
    case StmtKind::kOutput: {
      Value v = eval(*s.expr);
      if (v.is_string()) {
        out += v.str();
      } else {
        out += to_str(v);
      }
      return Flow::kNormal;
    }
    case StmtKind::kIf:
      for (const auto& [cond, body] : s.branches) {
        if (eval(*cond).truthy()) return exec(body, out);
      }
      return exec(s.else_body, out);
    case StmtKind::kFor:
      return exec_for(s, out);
    case StmtKind::kSet:
      assign(s, eval(*s.expr));
      return Flow::kNormal;
    case StmtKind::kSetBlock: {
      std::string captured;
      exec(s.body, captured);
      Value v = Value::string(std::move(captured));
      if (s.filter) {
        // The filter chain's innermost subject is a placeholder for the block's text.
        std::vector<const Expr*> chain;
        for (const Expr* f = s.filter.get(); f; f = f->args[0].get()) chain.push_back(f);
        for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
          CallArgs args;
          collect_args(**it, 1, args);
          v = apply_filter(*this, (*it)->name, v, args);
        }
      }
      assign(s, std::move(v));
      return Flow::kNormal;
    }
    case StmtKind::kFilterBlock: {
      std::string captured;
      Flow f = exec(s.body, captured);
      Value v = Value::string(std::move(captured));
      std::vector<const Expr*> chain;
      for (const Expr* e = s.filter.get(); e; e = e->args[0].get()) chain.push_back(e);
      for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        CallArgs args;
        collect_args(**it, 1, args);
        v = apply_filter(*this, (*it)->name, v, args);
      }
      out += to_str(v);
      return f;
    }
    case StmtKind::kMacro: {
      // Like jinja2, a macro keeps the values of the enclosing scopes (a loop's variables, say)
      // as they are now; the template's top-level names are looked up when it runs.
      auto closure = std::make_shared<Frame>();
      for (size_t i = 2; i < scope_.size(); ++i) {
        for (const auto& [name, value] : scope_[i]->vars) closure->set(name, value);
      }
      const Stmt* macro = &s;
      scope_.back()->set(
          s.targets[0],
          Value::callable(s.targets[0], [macro, closure](Evaluator& ev, CallArgs& args) {
            return ev.call_macro(*macro, *closure, args);
          }));
      return Flow::kNormal;
    }
    case StmtKind::kWith: {
      Frame frame;
      for (const auto& [name, expr] : s.params) frame.set(name, eval(*expr));
      scope_.push_back(&frame);
      Flow f = exec(s.body, out);
      scope_.pop_back();
      return f;
    }
    case StmtKind::kScope:
      return exec(s.body, out);
    case StmtKind::kBreak:
      return Flow::kBreak;
    case StmtKind::kContinue:
      return Flow::kContinue;
  }
  return Flow::kNormal;
}

void Evaluator::assign(const Stmt& s, Value v) {
  if (!s.attr.empty()) {
    Value target = lookup(s.targets[0]);
    TESSERA_CHECK(target.kind() == Value::Kind::kNamespace,
                  "can only assign attributes on namespace objects, and '"
                      << s.targets[0] << "' is " << target.type_name());
    TESSERA_CHECK(s.attr[0] != '_',
                  "chat templates cannot store underscore-prefixed attributes "
                  "on a namespace, but got '"
                      << s.attr << "'");
    target.ns().set(Value::string(s.attr), std::move(v));
    return;
  }
  if (s.targets.size() == 1) {
    scope_.back()->set(s.targets[0], std::move(v));
    return;
  }
  List items = iterate(v);
  TESSERA_CHECK(items.size() == s.targets.size(), "cannot unpack " << items.size()
                                                                   << " values into "
                                                                   << s.targets.size() << " names");
  for (size_t i = 0; i < items.size(); ++i) scope_.back()->set(s.targets[i], std::move(items[i]));
}

Evaluator::Flow Evaluator::exec_for(const Stmt& s, std::string& out) {
  Value iterable = eval(*s.expr);
  List all = iterate(iterable);
  auto bind = [&](Frame& frame, const Value& item) {
    if (s.targets.size() == 1) {
      frame.set(s.targets[0], item);
      return;
    }
    List parts = iterate(item);
    TESSERA_CHECK(parts.size() == s.targets.size(), "cannot unpack "
                                                        << parts.size() << " values into "
                                                        << s.targets.size() << " loop variables");
    for (size_t i = 0; i < parts.size(); ++i) frame.set(s.targets[i], std::move(parts[i]));
  };
  List items;
  if (s.cond) {
    for (const Value& item : all) {
      Frame frame;
      bind(frame, item);
      scope_.push_back(&frame);
      bool keep = eval(*s.cond).truthy();
      scope_.pop_back();
      if (keep) items.push_back(item);
    }
  } else {
    items = std::move(all);
  }
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    Frame frame;
    bind(frame, items[i]);
    Dict loop;
    loop.set(Value::string("index"), Value::integer(i + 1));
    loop.set(Value::string("index0"), Value::integer(i));
    loop.set(Value::string("revindex"), Value::integer(n - i));
    loop.set(Value::string("revindex0"), Value::integer(n - i - 1));
    loop.set(Value::string("first"), Value::boolean(i == 0));
    loop.set(Value::string("last"), Value::boolean(i == n - 1));
    loop.set(Value::string("length"), Value::integer(n));
    loop.set(Value::string("depth"), Value::integer(1));
    loop.set(Value::string("depth0"), Value::integer(0));
    if (i > 0) loop.set(Value::string("previtem"), items[i - 1]);
    if (i + 1 < n) loop.set(Value::string("nextitem"), items[i + 1]);
    loop.set(Value::string("cycle"), Value::callable("cycle", [i](Evaluator&, CallArgs& a) {
               TESSERA_CHECK(!a.args.empty(), "loop.cycle() needs at least one argument");
               return a.args[static_cast<size_t>(i) % a.args.size()];
             }));
    frame.set("loop", Value::dict(std::move(loop)));
    scope_.push_back(&frame);
    Flow f = exec(s.body, out);
    scope_.pop_back();
    if (f == Flow::kBreak) break;
  }
  if (n == 0) return exec(s.else_body, out);
  return Flow::kNormal;
}

Value Evaluator::call_macro(const Stmt& macro, const Frame& closure, CallArgs& args) {
  TESSERA_CHECK(macro_depth_ < kMaxMacroDepth,
                "macro '" << macro.targets[0] << "' recursed too deeply");
  TESSERA_CHECK(args.args.size() <= macro.params.size(),
                "macro '" << macro.targets[0] << "' takes " << macro.params.size()
                          << " arguments, got " << args.args.size());
  Frame frame;
  Frame closure_copy = closure;  // the macro body may assign; keep the captured values intact
  std::vector<Frame*> saved = {scope_[0], scope_[1], &closure_copy, &frame};
  std::swap(saved, scope_);
  ++macro_depth_;
  std::string out;
  try {
    for (size_t i = 0; i < macro.params.size(); ++i) {
      const auto& [name, def] = macro.params[i];
      Value v;
      bool bound = false;
      if (i < args.args.size()) {
        v = args.args[i];
        bound = true;
      }
      for (auto& [key, value] : args.kwargs) {
        if (key == name) {
          TESSERA_CHECK(!bound, "macro '" << macro.targets[0] << "' got multiple values for '"
                                          << name << "'");
          v = value;
          bound = true;
        }
      }
      if (!bound && def) v = eval(*def);
      if (!bound && !def) v = Value::undefined("parameter '" + name + "' was not provided");
      frame.set(name, std::move(v));
    }
    for (auto& [key, value] : args.kwargs) {
      bool known = false;
      for (const auto& p : macro.params) known = known || p.first == key;
      TESSERA_CHECK(known,
                    "macro '" << macro.targets[0] << "' takes no keyword argument '" << key << "'");
    }
    exec(macro.body, out);
  } catch (...) {
    std::swap(saved, scope_);
    --macro_depth_;
    throw;
  }
  std::swap(saved, scope_);
  --macro_depth_;
  return Value::string(std::move(out));
}

// ---- expressions -------------------------------------------------------------------------------

void Evaluator::collect_args(const Expr& e, size_t first, CallArgs& out) {
  for (size_t i = first; i < e.args.size(); ++i) out.args.push_back(eval(*e.args[i]));
  for (const auto& [key, expr] : e.kwargs) out.kwargs.emplace_back(key, eval(*expr));
}

Value Evaluator::call(const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) {
    TESSERA_FAIL((callee.undefined_hint().empty() ? std::string("value is undefined")
                                                  : callee.undefined_hint())
                 << " and cannot be called");
  }
  TESSERA_CHECK(callee.kind() == Value::Kind::kCallable,
                "'" << callee.type_name() << "' object is not callable");
  return callee.fn().fn(*this, args);
}

Value Evaluator::eval_call(const Expr& e) {
  const Expr& target = *e.args[0];
  CallArgs args;
  if (target.kind == ExprKind::kAttr) {
    Value obj = eval(*target.args[0]);
    if (has_method(obj, target.name)) {
      collect_args(e, 1, args);
      bool found = true;
      Value r = call_method(obj, target.name, args, &found);
      if (found) return r;
    }
    Value callee = get_attr(obj, target.name);
    collect_args(e, 1, args);
    return call(callee, args);
  }
  Value callee = eval(target);
  collect_args(e, 1, args);
  return call(callee, args);
}

namespace {

void check_overflow(bool overflow) {
  TESSERA_CHECK(!overflow, "integer overflow in template arithmetic");
}

Value repeat(const Value& seq, int64_t times) {
  if (seq.is_string()) {
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += seq.str();
    return Value::string(std::move(out));
  }
  List out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return Value::list(std::move(out));
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kString:
      TESSERA_CHECK(item.is_string(),
                    "'in <string>' requires string as left operand, not " << item.type_name());
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& v : container.items()) {
        if (values_equal(v, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      return container.dict().find(item) != nullptr;
    case Value::Kind::kUndefined:
      return false;
    default:
      TESSERA_FAIL("argument of type '" << container.type_name() << "' is not iterable");
  }
}

}  // namespace

Value Evaluator::eval_binary(BinOp op, const Value& a, const Value& b) {
  const char* sym = "";
  switch (op) {
    case BinOp::kEq:
      return Value::boolean(values_equal(a, b));
    case BinOp::kNe:
      return Value::boolean(!values_equal(a, b));
    case BinOp::kLt:
      return Value::boolean(values_less(a, b));
    case BinOp::kGt:
      return Value::boolean(values_less(b, a));
    case BinOp::kLe:
      return Value::boolean(values_less(a, b) || values_equal(a, b));
    case BinOp::kGe:
      return Value::boolean(values_less(b, a) || values_equal(a, b));
    case BinOp::kIn:
      return Value::boolean(contains(b, a));
    case BinOp::kNotIn:
      return Value::boolean(!contains(b, a));
    default:
      break;
  }
  if (a.is_number() && b.is_number()) {
    const bool ints = a.is_integral() && b.is_integral();
    const int64_t x = a.as_int();
    const int64_t y = b.as_int();
    const double fx = a.as_double();
    const double fy = b.as_double();
    int64_t r = 0;
    switch (op) {
      case BinOp::kAdd:
        if (!ints) return Value::number(fx + fy);
        check_overflow(__builtin_add_overflow(x, y, &r));
        return Value::integer(r);
      case BinOp::kSub:
        if (!ints) return Value::number(fx - fy);
        check_overflow(__builtin_sub_overflow(x, y, &r));
        return Value::integer(r);
      case BinOp::kMul:
        if (!ints) return Value::number(fx * fy);
        check_overflow(__builtin_mul_overflow(x, y, &r));
        return Value::integer(r);
      case BinOp::kDiv:
        TESSERA_CHECK(fy != 0, "division by zero");
        return Value::number(fx / fy);
      case BinOp::kFloorDiv:
        TESSERA_CHECK(fy != 0, "integer division or modulo by zero");
        if (ints) {
          int64_t q = x / y;
          if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
          return Value::integer(q);
        }
        return Value::number(std::floor(fx / fy));
      case BinOp::kMod:
        TESSERA_CHECK(fy != 0, "integer division or modulo by zero");
        if (ints) {
          int64_t m = x % y;
          if (m != 0 && ((m < 0) != (y < 0))) m += y;
          return Value::integer(m);
        } else {
          double m = std::fmod(fx, fy);
          if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
          return Value::number(m);
        }
      case BinOp::kPow:
        if (ints && y >= 0) {
          int64_t acc = 1;
          for (int64_t i = 0; i < y; ++i) check_overflow(__builtin_mul_overflow(acc, x, &acc));
          return Value::integer(acc);
        }
        return Value::number(std::pow(fx, fy));
      default:
        break;
    }
  }
  switch (op) {
    case BinOp::kAdd:
      sym = "+";
      if (a.is_string() && b.is_string()) return Value::string(a.str() + b.str());
      if (a.is_list() && b.is_list()) {
        List out = a.items();
        out.insert(out.end(), b.items().begin(), b.items().end());
        return Value::list(std::move(out));
      }
      break;
    case BinOp::kMul:
      sym = "*";
      if ((a.is_string() || a.is_list()) && b.is_integral()) return repeat(a, b.as_int());
      if ((b.is_string() || b.is_list()) && a.is_integral()) return repeat(b, a.as_int());
      break;
    case BinOp::kSub:
      sym = "-";
      break;
    case BinOp::kDiv:
      sym = "/";
      break;
    case BinOp::kFloorDiv:
      sym = "//";
      break;
    case BinOp::kMod:
      sym = "%";
      if (a.is_string()) return Value::string(percent_format(a.str(), b));
      break;
    case BinOp::kPow:
      sym = "**";
      break;
    default:
      break;
  }
  for (const Value* v : {&a, &b}) {
    if (v->is_undefined()) {
      TESSERA_FAIL(
          (v->undefined_hint().empty() ? std::string("an undefined value") : v->undefined_hint())
          << " (used with '" << sym << "')");
    }
  }
  TESSERA_FAIL("unsupported operand type(s) for " << sym << ": '" << a.type_name() << "' and '"
                                                  << b.type_name() << "'");
}

Value Evaluator::eval(const Expr& e) {
  // Long operator chains ("a + b + c ...") nest without parser recursion; bound them here.
  struct DepthGuard {
    int& depth;
    explicit DepthGuard(int& d) : depth(d) {
      TESSERA_CHECK(++depth <= kMaxExprDepth, "expression is nested too deeply");
    }
    ~DepthGuard() { --depth; }
  } guard(eval_depth_);
  switch (e.kind) {
    case ExprKind::kLiteral:
      return e.value;
    case ExprKind::kName:
      return lookup(e.name);
    case ExprKind::kList:
    case ExprKind::kTuple: {
      List items;
      items.reserve(e.args.size());
      for (const auto& a : e.args) items.push_back(eval(*a));
      if (e.kind == ExprKind::kTuple) return Value::tuple(std::move(items));
      return Value::list(std::move(items));
    }
    case ExprKind::kDict: {
      Dict d;
      for (size_t i = 0; i + 1 < e.args.size(); i += 2)
        d.set(eval(*e.args[i]), eval(*e.args[i + 1]));
      return Value::dict(std::move(d));
    }
    case ExprKind::kAttr:
      return get_attr(eval(*e.args[0]), e.name);
    case ExprKind::kItem:
      return get_item(eval(*e.args[0]), eval(*e.args[1]));
    case ExprKind::kSlice: {
      Value obj = eval(*e.args[0]);
      Value parts[3];
      for (int i = 0; i < 3; ++i) {
        if (e.args[i + 1]) parts[i] = eval(*e.args[i + 1]);
      }
      return get_slice(obj, parts[0], parts[1], parts[2]);
    }
    case ExprKind::kCall:
      return eval_call(e);
    case ExprKind::kFilter: {
      Value subject = eval(*e.args[0]);
      CallArgs args;
      collect_args(e, 1, args);
      return apply_filter(*this, e.name, subject, args);
    }
    case ExprKind::kTest: {
      Value subject = eval(*e.args[0]);
      CallArgs args;
      collect_args(e, 1, args);
      return Value::boolean(apply_test(*this, e.name, subject, args) != e.negated);
    }
    case ExprKind::kNeg:
    case ExprKind::kPos: {
      Value v = eval(*e.args[0]);
      TESSERA_CHECK(v.is_number(), "bad operand type for unary "
                                       << (e.kind == ExprKind::kNeg ? "-" : "+") << ": '"
                                       << v.type_name() << "'");
      if (e.kind == ExprKind::kPos) return v.is_integral() ? Value::integer(v.as_int()) : v;
      if (v.is_integral()) {
        check_overflow(v.as_int() == INT64_MIN);
        return Value::integer(-v.as_int());
      }
      return Value::number(-v.as_double());
    }
    case ExprKind::kNot:
      return Value::boolean(!eval(*e.args[0]).truthy());
    case ExprKind::kAnd: {
      Value left = eval(*e.args[0]);
      return left.truthy() ? eval(*e.args[1]) : left;
    }
    case ExprKind::kOr: {
      Value left = eval(*e.args[0]);
      return left.truthy() ? left : eval(*e.args[1]);
    }
    case ExprKind::kBinary: {
      Value a = eval(*e.args[0]);
      Value b = eval(*e.args[1]);
      return eval_binary(e.op, a, b);
    }
    case ExprKind::kCompare: {
      Value left = eval(*e.args[0]);
      for (size_t i = 0; i < e.ops.size(); ++i) {
        Value right = eval(*e.args[i + 1]);
        if (!eval_binary(e.ops[i], left, right).truthy()) return Value::boolean(false);
        left = std::move(right);
      }
      return Value::boolean(true);
    }
    case ExprKind::kCond:
      if (eval(*e.args[1]).truthy()) return eval(*e.args[0]);
      if (e.args[2]) return eval(*e.args[2]);
      return Value::undefined("the conditional expression evaluated to false and had no else");
    case ExprKind::kConcat: {
      std::string out;
      for (const auto& a : e.args) out += to_str(eval(*a));
      return Value::string(std::move(out));
    }
  }
  return Value();
}

}  // namespace tessera::jinja
