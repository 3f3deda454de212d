#include "runtime/openai_api.h"

#include <nlohmann/json.hpp>

#include "io/pretokenizer.h"
#include "runtime/request.h"

namespace tessera {
namespace {

using nlohmann::json;

[[noreturn]] void bad_request(const std::string& message) {
  throw ApiError(400, message);
}

bool boolean_field(const json& body, const char* name) {
  const json& v = body.at(name);
  if (v.is_null()) return false;
  if (!v.is_boolean())
    bad_request(std::string("field '") + name + "' must be true or false, got " + brief(v));
  return v.get<bool>();
}

// 0 is accepted (the default); other values ask for what this server does not do.
void zero_only(const json& body, const char* name) {
  if (body.at(name).is_null()) return;
  if (number_field(body, name) != 0.0)
    bad_request(std::string("field '") + name + "' is not supported (only 0)");
}

int logprob_count(const json& body, const char* name) {
  const int64_t k = integer_field(body, name);
  if (k < 0 || k > kMaxLogprobs)
    bad_request(std::string("field '") + name + "' must be in [0, " + std::to_string(kMaxLogprobs) +
                "], got " + std::to_string(k));
  return int(k);
}

std::vector<int32_t> completion_prompt(const json& v, const Tokenizer& tokenizer) {
  if (v.is_string()) return tokenize_prompt(tokenizer, v.get<std::string>(), false);
  if (v.is_array() && v.size() == 1 && v[0].is_string())
    return tokenize_prompt(tokenizer, v[0].get<std::string>(), false);
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) {  // token ids
    std::vector<int32_t> ids;
    for (const json& t : v) {
      if (!t.is_number_integer())
        bad_request("field 'prompt' holds token ids and " + brief(t) + ", which is not one");
      const int64_t id = t.get<int64_t>();
      if (id < 0 || id >= int64_t(tokenizer.data().tokens.size()))
        bad_request("token id " + std::to_string(id) + " in 'prompt' is outside the vocabulary");
      ids.push_back(int32_t(id));
    }
    return ids;
  }
  if (v.is_array() && v.size() > 1 && v[0].is_string())
    bad_request("field 'prompt' holds several prompts; send one per request");
  bad_request("field 'prompt' must be a string or an array of token ids, got " + brief(v));
}

json usage_json(int64_t prompt, int64_t completion) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

// Log-probabilities of tokens [first, first + count) of r in the endpoint's form.
json logprobs_json(const ApiAnswer& a, const Tokenizer& tokenizer, const GenerationResult& r,
                   size_t first, size_t count) {
  if (a.logprobs < 0) return nullptr;
  const size_t end = std::min(first + count, r.logprobs.size());
  if (a.endpoint == Endpoint::kChat) {
    json content = json::array();
    for (size_t i = first; i < end; ++i) {
      const std::string bytes = tokenizer.token_bytes(r.tokens[i]);
      json top = json::array();
      for (const auto& [id, lp] : r.logprobs[i].top) {
        const std::string b = tokenizer.token_bytes(id);
        top.push_back(
            {{"token", token_text(tokenizer, id)}, {"logprob", lp}, {"bytes", bytes_of(b)}});
      }
      content.push_back({{"token", token_text(tokenizer, r.tokens[i])},
                         {"logprob", r.logprobs[i].logprob},
                         {"bytes", bytes_of(bytes)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  size_t offset = 0;
  for (size_t i = 0; i < first && i < r.tokens.size(); ++i)
    offset += tokenizer.token_bytes(r.tokens[i]).size();
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  for (size_t i = first; i < end; ++i) {
    tokens.push_back(token_text(tokenizer, r.tokens[i]));
    token_logprobs.push_back(r.logprobs[i].logprob);
    json alternatives = json::object();
    for (const auto& [id, lp] : r.logprobs[i].top) {
      const std::string t = token_text(tokenizer, id);
      if (!alternatives.contains(t)) alternatives[t] = lp;  // two ids can share a text
    }
    top.push_back(alternatives);
    offsets.push_back(offset);
    offset += tokenizer.token_bytes(r.tokens[i]).size();
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

json envelope(const ApiAnswer& a, bool chunk) {
  const char* object = a.endpoint == Endpoint::kChat
                           ? (chunk ? "chat.completion.chunk" : "chat.completion")
                           : "text_completion";
  return {{"id", a.id}, {"object", object}, {"created", a.created}, {"model", a.model}};
}

json finish_json(const std::string& reason) {
  return reason.empty() ? json(nullptr) : json(reason);
}

}  // namespace

std::string error_body(const std::string& message, const std::string& type,
                       const std::string& code) {
  return json_text({{"error",
                     {{"message", message},
                      {"type", type},
                      {"param", nullptr},
                      {"code", code.empty() ? json(nullptr) : json(code)}}}});
}

ApiRequest parse_api_request(Endpoint endpoint, const std::string& text, const ApiLimits& limits,
                             const Tokenizer& tokenizer,
                             const std::function<void(const GenerationRequest&)>& check) {
  json body;
  try {
    body = parse_request_json(text);
  } catch (const Error& e) {
    bad_request(std::string("the body: ") + e.what());
  }
  if (!body.is_object()) bad_request("the body must be a JSON object, got " + brief(body));
  const bool chat = endpoint == Endpoint::kChat;
  ApiRequest out;
  out.endpoint = endpoint;
  GenerationRequest g;
  bool has_max_tokens = false, want_logprobs = false;
  int top_logprobs = -1, n = 1;
  try {
    for (const auto& [key, v] : body.items()) {
      if (key == "model") {
        if (!v.is_string()) bad_request("field 'model' must be a string, got " + brief(v));
        out.model = v.get<std::string>();
      } else if (key == "stream") {
        out.stream = boolean_field(body, "stream");
      } else if (key == "stream_options") {
        if (v.is_null()) continue;
        if (!v.is_object()) bad_request("field 'stream_options' must be an object");
        for (const auto& [k2, v2] : v.items()) {
          if (k2 != "include_usage") bad_request("unknown field 'stream_options." + k2 + "'");
          out.include_usage = boolean_field(v, "include_usage");
        }
      } else if (key == "n") {
        const int64_t k = integer_field(body, "n");
        if (k < 1 || k > limits.max_n)
          bad_request("field 'n' must be in [1, " + std::to_string(limits.max_n) + "], got " +
                      std::to_string(k));
        n = int(k);
      } else if (key == "user") {
        if (!v.is_string() && !v.is_null()) bad_request("field 'user' must be a string");
      } else if (key == "presence_penalty" || key == "frequency_penalty") {
        zero_only(body, key.c_str());
      } else if (key == "logprobs") {
        if (v.is_null()) continue;
        if (chat) {
          want_logprobs = boolean_field(body, "logprobs");
        } else {
          want_logprobs = true;
          top_logprobs = logprob_count(body, "logprobs");
        }
      } else if (key == "top_logprobs" && chat) {
        if (!v.is_null()) top_logprobs = logprob_count(body, "top_logprobs");
      } else if (key == "max_completion_tokens" && chat) {
        if (v.is_null()) continue;
        g.max_tokens = integer_field(body, "max_completion_tokens");
        if (g.max_tokens < 1) bad_request("max_completion_tokens must be at least 1");
        has_max_tokens = true;
      } else if (key == "echo" && !chat) {
        if (boolean_field(body, "echo")) bad_request("field 'echo' is not supported");
      } else if (key == "best_of" && !chat) {
        if (!v.is_null() && integer_field(body, "best_of") != 1)
          bad_request("field 'best_of' is not supported (only 1)");
      } else if (key == (chat ? "messages" : "prompt")) {
        // below
      } else if (key == "max_tokens" && v.is_null()) {
        // absent
      } else if (parse_generation_field(body, key, g)) {
        has_max_tokens |= key == "max_tokens";
      } else {
        bad_request("unknown field '" + key + "'");
      }
    }
    if (!body.contains("model")) bad_request("field 'model' is required");
    if (out.model != limits.model_name)
      throw ApiError(404,
                     "the model '" + out.model + "' does not exist (this server has '" +
                         limits.model_name + "')",
                     "invalid_request_error", "model_not_found");
    if (!out.stream && body.contains("stream_options") && !body["stream_options"].is_null())
      bad_request("field 'stream_options' needs \"stream\": true");
    if (chat && top_logprobs >= 0 && !want_logprobs)
      bad_request("field 'top_logprobs' needs \"logprobs\": true");
    if (want_logprobs) out.logprobs = std::max(top_logprobs, 0);
    const char* field = chat ? "messages" : "prompt";
    if (!body.contains(field)) bad_request(std::string("field '") + field + "' is required");
    g.prompt = chat ? tokenize_prompt(tokenizer, render_chat(tokenizer, body["messages"]), true)
                    : completion_prompt(body["prompt"], tokenizer);
    if (g.prompt.empty()) bad_request("the prompt is empty");
    const int64_t prompt = int64_t(g.prompt.size()), window = limits.context_window;
    if (prompt >= window)
      bad_request("the prompt has " + std::to_string(prompt) +
                  " tokens; this model's context window is " + std::to_string(window) +
                  " tokens (prompt and output together)");
    if (has_max_tokens && g.max_tokens > window - prompt)
      bad_request("this model's context window is " + std::to_string(window) +
                  " tokens; the prompt has " + std::to_string(prompt) +
                  " and max_tokens asks for " + std::to_string(g.max_tokens) + " more");
    if (!has_max_tokens)
      g.max_tokens = limits.default_max_tokens > 0
                         ? std::min(limits.default_max_tokens, window - prompt)
                         : window - prompt;
    g.sampling.logprobs = out.logprobs;
    g.sampling.validate();
    out.prompt_tokens = prompt;
    for (int i = 0; i < n; ++i) {
      GenerationRequest c = g;
      c.sampling.seed = g.sampling.seed + uint64_t(i);
      if (check) check(c);
      out.choices.push_back(std::move(c));
    }
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kInvalidInput) throw;
    bad_request(e.what());
  }
  return out;
}

std::string token_text(const Tokenizer& tokenizer, int32_t id) {
  return unicode::to_valid_utf8(tokenizer.token_bytes(id));
}

std::string answer_body(const ApiAnswer& a, const Tokenizer& tokenizer,
                        const std::vector<GenerationResult>& results) {
  json out = envelope(a, false);
  json choices = json::array();
  int64_t prompt = 0, completion = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const GenerationResult& r = results[i];
    json c = {{"index", i},
              {"logprobs", logprobs_json(a, tokenizer, r, 0, r.tokens.size())},
              {"finish_reason", finish_json(r.finish_reason)}};
    if (a.endpoint == Endpoint::kChat)
      c["message"] = {{"role", "assistant"}, {"content", r.text}};
    else
      c["text"] = r.text;
    choices.push_back(c);
    prompt = r.prompt_tokens;
    completion += int64_t(r.tokens.size());
  }
  out["choices"] = choices;
  out["usage"] = usage_json(prompt, completion);
  return json_text(out);
}

std::string chunk_body(const ApiAnswer& a, const Tokenizer& tokenizer, int index,
                       const std::string& text, const GenerationResult& so_far, size_t first_token,
                       size_t count, const std::string& finish_reason) {
  json out = envelope(a, true);
  json c = {{"index", index},
            {"logprobs", logprobs_json(a, tokenizer, so_far, first_token, count)},
            {"finish_reason", finish_json(finish_reason)}};
  if (a.endpoint == Endpoint::kChat)
    c["delta"] = text.empty() && !finish_reason.empty() ? json::object() : json{{"content", text}};
  else
    c["text"] = text;
  out["choices"] = json::array({c});
  return json_text(out);
}

std::string role_chunk(const ApiAnswer& a, int index) {
  json out = envelope(a, true);
  out["choices"] = json::array({{{"index", index},
                                 {"delta", {{"role", "assistant"}, {"content", ""}}},
                                 {"logprobs", nullptr},
                                 {"finish_reason", nullptr}}});
  return json_text(out);
}

std::string usage_chunk(const ApiAnswer& a, int64_t prompt_tokens, int64_t completion_tokens) {
  json out = envelope(a, true);
  out["choices"] = json::array();
  out["usage"] = usage_json(prompt_tokens, completion_tokens);
  return json_text(out);
}

}  // namespace tessera
