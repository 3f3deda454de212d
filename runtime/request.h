// A generation request as users write it (one JSONL line of a batch job, later an HTTP body):
// OpenAI field names, validated field by field so a bad request gets an error naming the field.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>

#include "io/tokenizer.h"
#include "runtime/generator.h"

namespace tessera {

struct RequestDefaults {
  SamplingParams sampling;
  int64_t max_tokens = 256;
  std::vector<std::string> stop;
  bool ignore_eos = false;
};

struct ParsedRequest {
  std::string id;
  GenerationRequest generation;
};

// Renders `messages` ([{role, content}, ...]) with the tokenizer's chat template, ready for
// generation (add_generation_prompt), as Hugging Face's apply_chat_template(tokenize=False).
std::string render_chat(const Tokenizer& tokenizer, const nlohmann::json& messages);
// Tokens of a plain prompt (BOS added when the model wants it) or of a rendered chat.
std::vector<int32_t> tokenize_prompt(const Tokenizer& tokenizer, const std::string& text,
                                     bool is_chat);

// The request's id as a string ("id" may be a string or an integer), or fallback_id when it has
// none or one of another type (parse_request then reports the bad type).
std::string request_id(const nlohmann::json& body, const std::string& fallback_id);

// One generation field of a request body (max_tokens, temperature, top_p, top_k, min_p, seed,
// stop, repetition_penalty, ignore_eos) into g; false when `key` is none of them. Throws
// (invalid input) naming the field when its value is wrong.
bool parse_generation_field(const nlohmann::json& body, const std::string& key,
                            GenerationRequest& g);
// A request's JSON text parsed, refusing nesting deeper than 64 levels (invalid input naming
// the problem, as for malformed JSON): error messages quote values, and printing a deep one would
// recurse once per level.
nlohmann::json parse_request_json(const std::string& text);
// A value's JSON on one line, malformed UTF-8 replaced (U+FFFD) instead of throwing.
std::string json_text(const nlohmann::json& value);
// A value as an error message quotes it: its JSON, cut to 80 characters.
std::string brief(const nlohmann::json& value);

// integer and number fields of a request body, checked (invalid input naming the field)
int64_t integer_field(const nlohmann::json& body, const char* name);
double number_field(const nlohmann::json& body, const char* name);

// Parses one request object. Accepted fields: id (string or integer), prompt (string) or
// messages (array of {role, content}), max_tokens, temperature, top_p, top_k, min_p, seed,
// stop (string or array), repetition_penalty, ignore_eos. Anything else is an error naming the
// field. `fallback_id` names a request that carries no id.
ParsedRequest parse_request(const nlohmann::json& body, const std::string& fallback_id,
                            const RequestDefaults& defaults, const Tokenizer& tokenizer);

}  // namespace tessera
