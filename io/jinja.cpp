// Public entry points of the Jinja2 interpreter: JSON context conversion and error reporting.
#include "io/jinja.h"

#include <limits>

#include "io/jinja_internal.h"

namespace tessera {
namespace {

template <typename Json>
jinja::Value from_json(const Json& j) {
  using jinja::Value;
  switch (j.type()) {
    case Json::value_t::null:
      return Value::none();
    case Json::value_t::boolean:
      return Value::boolean(j.template get<bool>());
    case Json::value_t::number_integer:
      return Value::integer(j.template get<int64_t>());
    case Json::value_t::number_unsigned: {
      auto u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Value::number(static_cast<double>(u));
      }
      return Value::integer(static_cast<int64_t>(u));
    }
    case Json::value_t::number_float:
      return Value::number(j.template get<double>());
    case Json::value_t::string:
      return Value::string(j.template get<std::string>());
    case Json::value_t::array: {
      jinja::List items;
      items.reserve(j.size());
      for (const auto& item : j) items.push_back(from_json(item));
      return Value::list(std::move(items));
    }
    case Json::value_t::object: {
      jinja::Dict d;
      d.entries.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) {
        d.entries.emplace_back(Value::string(it.key()), from_json(it.value()));
      }
      return Value::dict(std::move(d));
    }
    default:
      TESSERA_FAIL("template context holds an unsupported JSON value (" << j.type_name() << ")");
  }
}

template <typename Json>
std::string render_program(const jinja::Program& program, const Json& context) {
  TESSERA_CHECK(context.is_object(),
                "template context must be a JSON object, got " << context.type_name());
  std::vector<std::pair<std::string, jinja::Value>> vars;
  vars.reserve(context.size());
  for (auto it = context.begin(); it != context.end(); ++it) {
    vars.emplace_back(it.key(), from_json(it.value()));
  }
  jinja::Evaluator ev(std::move(vars));
  try {
    return ev.run(program);
  } catch (const jinja::RaisedException& e) {
    TESSERA_FAIL(e.message);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kInvalidInput) throw;
    TESSERA_FAIL("jinja template error at line " << ev.line() << ": " << e.what());
  }
}

}  // namespace

JinjaTemplate::JinjaTemplate(std::string_view source) : program_(jinja::parse_template(source)) {}

std::string JinjaTemplate::render(const nlohmann::json& context) const {
  return render_program(*program_, context);
}

std::string JinjaTemplate::render(const nlohmann::ordered_json& context) const {
  return render_program(*program_, context);
}

std::string render_jinja(std::string_view source, const nlohmann::json& context) {
  return JinjaTemplate(source).render(context);
}

}  // namespace tessera
