// A small Jinja2 interpreter for chat templates. It renders like transformers' apply_chat_template
// environment: jinja2's default (lenient) undefined values, trim_blocks and lstrip_blocks on,
// the loopcontrols extension ({% break %}, {% continue %}), transformers' tojson filter
// (ensure_ascii=False, indent, separators, sort_keys) and its globals raise_exception(msg),
// strftime_now(fmt), namespace(...) and dict(...).
//
// Errors are tessera::Error of kind kInvalidInput: syntax errors name the line and column,
// runtime errors name the template line, and raise_exception(msg) throws exactly `msg`.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace tessera {

namespace jinja {
struct Program;
}

// A template parsed once and rendered any number of times; render() is const and thread-safe.
class JinjaTemplate {
 public:
  explicit JinjaTemplate(std::string_view source);
  // The context must be a JSON object; its keys become the template's variables.
  std::string render(const nlohmann::json& context) const;
  // Same, keeping the context's key order (what dict iteration and tojson see).
  std::string render(const nlohmann::ordered_json& context) const;

 private:
  std::shared_ptr<const jinja::Program> program_;
};

// Parses and renders in one go.
std::string render_jinja(std::string_view source, const nlohmann::json& context);

}  // namespace tessera
