#include "runtime/request.h"

#include <climits>
#include <cmath>
#include <nlohmann/json.hpp>

#include "io/chat_template.h"

namespace tessera {
using nlohmann::json;

json parse_request_json(const std::string& text) {
  constexpr int kMaxDepth = 64;
  struct TooDeep {};
  try {
    return json::parse(text, [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxDepth) throw TooDeep{};
      return true;
    });
  } catch (const TooDeep&) {
    TESSERA_FAIL("the JSON is nested deeper than " << kMaxDepth << " levels");
  } catch (const json::parse_error& e) {
    TESSERA_FAIL("malformed JSON: " << e.what());
  }
}

std::string json_text(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string brief(const json& value) {
  std::string s = json_text(value);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

double number_field(const json& body, const char* name) {
  const json& v = body.at(name);
  TESSERA_CHECK(v.is_number(), "field '" << name << "' must be a number, got " << brief(v));
  return v.get<double>();
}

int64_t integer_field(const json& body, const char* name) {
  const json& v = body.at(name);
  const bool integral_float = v.is_number_float() && std::abs(v.get<double>()) < 9.0e18 &&
                              v.get<double>() == std::floor(v.get<double>());
  TESSERA_CHECK(v.is_number_integer() || integral_float,
                "field '" << name << "' must be an integer, got " << brief(v));
  return v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX
                                                                           : v.get<int64_t>();
}

std::string render_chat(const Tokenizer& tokenizer, const json& messages) {
  const TokenizerData& t = tokenizer.data();
  TESSERA_CHECK(!t.chat_template.empty(), "this model has no chat template");
  TESSERA_CHECK(messages.is_array() && !messages.empty(),
                "'messages' must be a non-empty array of {role, content} objects");
  std::vector<ChatMessage> msgs;
  for (const json& m : messages) {
    TESSERA_CHECK(
        m.is_object() && m.contains("role") && m["role"].is_string() && m.contains("content") &&
            (m["content"].is_string() || m["content"].is_array()),
        "each message must be an object with string 'role' and 'content', got " << brief(m));
    std::string content;
    if (m["content"].is_string()) {
      content = m["content"].get<std::string>();
    } else {  // OpenAI's content parts: [{"type": "text", "text": ...}, ...]
      for (const json& part : m["content"]) {
        TESSERA_CHECK(part.is_object() && part.value("type", "") == "text" &&
                          part.contains("text") && part["text"].is_string(),
                      "a message's content parts must be {\"type\": \"text\", \"text\": ...}, got "
                          << brief(part));
        content += part["text"].get<std::string>();
      }
    }
    msgs.push_back({m["role"].get<std::string>(), content});
  }
  ChatTemplateOptions opt;
  opt.add_generation_prompt = true;
  if (t.bos_id >= 0 && t.bos_id < int32_t(t.tokens.size()))
    opt.bos_token = t.tokens[size_t(t.bos_id)];
  if (t.eos_id >= 0 && t.eos_id < int32_t(t.tokens.size()))
    opt.eos_token = t.tokens[size_t(t.eos_id)];
  return apply_chat_template(t.chat_template, msgs, opt);
}

std::vector<int32_t> tokenize_prompt(const Tokenizer& tokenizer, const std::string& text,
                                     bool is_chat) {
  // A rendered chat already holds its special tokens (BOS included where the template wants it).
  return tokenizer.encode(text, /*add_special=*/!is_chat, /*parse_special=*/true);
}

std::string request_id(const json& body, const std::string& fallback_id) {
  if (!body.is_object() || !body.contains("id")) return fallback_id;
  const json& v = body["id"];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  return fallback_id;
}

namespace {
// Every generated token is checked against every stop string: bounded, so one request cannot
// slow everyone's steps.
constexpr size_t kMaxStopStrings = 16, kMaxStopBytes = 256;
}  // namespace

bool parse_generation_field(const json& body, const std::string& key, GenerationRequest& g) {
  const json& v = body.at(key);
  if (key == "max_tokens") {
    g.max_tokens = integer_field(body, "max_tokens");
    TESSERA_CHECK(g.max_tokens >= 1, "max_tokens must be at least 1, got " << g.max_tokens);
  } else if (key == "temperature") {
    g.sampling.temperature = float(number_field(body, "temperature"));
  } else if (key == "top_p") {
    g.sampling.top_p = float(number_field(body, "top_p"));
  } else if (key == "top_k") {
    const int64_t k = integer_field(body, "top_k");
    g.sampling.top_k = k < 0 ? 0 : int(std::min<int64_t>(k, INT32_MAX));  // -1 means "off"
  } else if (key == "min_p") {
    g.sampling.min_p = float(number_field(body, "min_p"));
  } else if (key == "repetition_penalty") {
    g.sampling.repetition_penalty = float(number_field(body, "repetition_penalty"));
  } else if (key == "seed") {
    g.sampling.seed = uint64_t(integer_field(body, "seed"));
  } else if (key == "ignore_eos") {
    TESSERA_CHECK(v.is_boolean(), "field 'ignore_eos' must be true or false");
    g.ignore_eos = v.get<bool>();
  } else if (key == "stop") {
    g.stop.clear();
    if (v.is_string()) {
      g.stop.push_back(v.get<std::string>());
    } else {
      TESSERA_CHECK(v.is_array() || v.is_null(), "field 'stop' must be a string or an array");
      TESSERA_CHECK(v.size() <= kMaxStopStrings,
                    "field 'stop' holds " << v.size() << " strings; at most " << kMaxStopStrings);
      for (const json& s : v) {
        TESSERA_CHECK(s.is_string() && !s.get<std::string>().empty(),
                      "field 'stop' must hold non-empty strings, got " << brief(s));
        g.stop.push_back(s.get<std::string>());
      }
    }
    for (const std::string& stop : g.stop)
      TESSERA_CHECK(stop.size() <= kMaxStopBytes,
                    "a stop string has " << stop.size() << " bytes; at most " << kMaxStopBytes);
  } else {
    return false;
  }
  return true;
}

ParsedRequest parse_request(const json& body, const std::string& fallback_id,
                            const RequestDefaults& d, const Tokenizer& tokenizer) {
  TESSERA_CHECK(body.is_object(), "a request must be a JSON object, got " << brief(body));
  ParsedRequest out;
  out.id = fallback_id;
  GenerationRequest& g = out.generation;
  g.sampling = d.sampling;
  g.max_tokens = d.max_tokens;
  g.stop = d.stop;
  g.ignore_eos = d.ignore_eos;
  for (const auto& [key, v] : body.items()) {
    if (key == "id") {
      TESSERA_CHECK(v.is_string() || v.is_number_integer(),
                    "field 'id' must be a string or an integer, got " << brief(v));
      out.id = request_id(body, fallback_id);
    } else if (key != "prompt" && key != "messages" && !parse_generation_field(body, key, g)) {
      TESSERA_FAIL("unknown field '" << key << "'");
    }
  }
  const bool has_prompt = body.contains("prompt"), has_messages = body.contains("messages");
  TESSERA_CHECK(has_prompt != has_messages,
                (has_prompt ? "give either 'prompt' or 'messages', not both"
                            : "the request has neither 'prompt' nor 'messages'"));
  if (has_prompt) {
    TESSERA_CHECK(body["prompt"].is_string(), "field 'prompt' must be a string");
    g.prompt = tokenize_prompt(tokenizer, body["prompt"].get<std::string>(), false);
  } else {
    g.prompt = tokenize_prompt(tokenizer, render_chat(tokenizer, body["messages"]), true);
  }
  g.sampling.validate();
  return out;
}

}  // namespace tessera
