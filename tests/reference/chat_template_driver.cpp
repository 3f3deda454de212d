// Reference-parity driver for chat templates (tests/reference/chat_template_parity.py).
// Reads one JSON object per line from stdin:
//   {"template": "...", "messages": [...], "add_generation_prompt": bool,
//    "bos_token": "...", "eos_token": "...", "tools": [...] (optional)}
// and prints one line per input: the rendered prompt as a JSON string, or {"error": "..."} when
// rendering throws. Messages that are plain {"role", "content"} strings go through
// apply_chat_template; anything richer (tool calls, tools) is rendered through JinjaTemplate with
// the same context that transformers builds.
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/chat_template.h"
#include "kernels/error.h"

namespace {

using nlohmann::ordered_json;

bool plain_messages(const ordered_json& messages) {
  for (const auto& m : messages) {
    if (!m.is_object() || m.size() != 2 || !m.contains("role") || !m.contains("content") ||
        !m["role"].is_string() || !m["content"].is_string()) {
      return false;
    }
  }
  return true;
}

std::string render(const ordered_json& req) {
  const std::string source = req.at("template").get<std::string>();
  const ordered_json& messages = req.at("messages");
  tessera::ChatTemplateOptions options;
  options.add_generation_prompt = req.value("add_generation_prompt", false);
  options.bos_token = req.value("bos_token", std::string());
  options.eos_token = req.value("eos_token", std::string());
  if (!req.contains("tools") && plain_messages(messages)) {
    std::vector<tessera::ChatMessage> chat;
    for (const auto& m : messages) {
      chat.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    return tessera::apply_chat_template(source, chat, options);
  }
  ordered_json context;
  context["messages"] = messages;
  context["tools"] = req.contains("tools") ? req["tools"] : ordered_json(nullptr);
  context["documents"] = nullptr;
  context["add_generation_prompt"] = options.add_generation_prompt;
  context["bos_token"] = options.bos_token;
  context["eos_token"] = options.eos_token;
  return tessera::JinjaTemplate(source).render(context);
}

}  // namespace

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    ordered_json out;
    try {
      out = render(ordered_json::parse(line));
    } catch (const tessera::Error& e) {
      out = ordered_json{{"error", e.what()}};
    } catch (const std::exception& e) {
      out = ordered_json{{"error", std::string("driver: ") + e.what()}};
    }
    std::cout << out.dump() << "\n" << std::flush;
  }
  return 0;
}
