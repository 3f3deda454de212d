// Chat templates: renders a conversation into the prompt text the way transformers'
// tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...) does.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "io/jinja.h"

namespace tessera {

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatTemplateOptions {
  bool add_generation_prompt = true;
  // Always defined for the template (as transformers does for a tokenizer that has them).
  std::string bos_token;
  std::string eos_token;
};

// A chat template parsed once. The template sees `messages` (a list of {"role", "content"}),
// `add_generation_prompt`, `bos_token`, `eos_token`, and `tools` and `documents` set to none.
class ChatTemplate {
 public:
  explicit ChatTemplate(std::string_view source) : template_(source) {}
  std::string apply(const std::vector<ChatMessage>& messages,
                    const ChatTemplateOptions& options) const;

 private:
  JinjaTemplate template_;
};

// Same as ChatTemplate(source).apply(...), with recently used templates kept parsed.
std::string apply_chat_template(std::string_view source, const std::vector<ChatMessage>& messages,
                                const ChatTemplateOptions& options);

}  // namespace tessera
