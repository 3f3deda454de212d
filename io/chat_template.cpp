#include "io/chat_template.h"

#include <list>
#include <memory>
#include <mutex>
#include <utility>

#include "kernels/error.h"

namespace tessera {

std::string ChatTemplate::apply(const std::vector<ChatMessage>& messages,
                                const ChatTemplateOptions& options) const {
  TESSERA_CHECK(!messages.empty(),
                "cannot apply a chat template to an empty conversation; give at least one message");
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) {
    list.push_back(nlohmann::ordered_json{{"role", m.role}, {"content", m.content}});
  }
  nlohmann::ordered_json context;
  context["messages"] = std::move(list);
  context["tools"] = nullptr;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = options.add_generation_prompt;
  context["bos_token"] = options.bos_token;
  context["eos_token"] = options.eos_token;
  return template_.render(context);
}

std::string apply_chat_template(std::string_view source, const std::vector<ChatMessage>& messages,
                                const ChatTemplateOptions& options) {
  // A server applies one or two templates over and over: keep the last few parsed.
  constexpr size_t kCacheSize = 4;
  static std::mutex mu;
  static std::list<std::pair<std::string, std::shared_ptr<const ChatTemplate>>> cache;
  std::shared_ptr<const ChatTemplate> tmpl;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto it = cache.begin(); it != cache.end(); ++it) {
      if (it->first == source) {
        cache.splice(cache.begin(), cache, it);
        tmpl = it->second;
        break;
      }
    }
  }
  if (!tmpl) {
    tmpl = std::make_shared<const ChatTemplate>(source);  // parse outside the lock; may throw
    std::lock_guard<std::mutex> lock(mu);
    cache.emplace_front(std::string(source), tmpl);
    if (cache.size() > kCacheSize) cache.pop_back();
  }
  return tmpl->apply(messages, options);
}

}  // namespace tessera
