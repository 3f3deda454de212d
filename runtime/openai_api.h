// The OpenAI API's request and response bodies (/v1/completions and /v1/chat/completions), as
// vLLM, TensorRT-LLM and llama.cpp serve them: parsing a body into generation requests, checked
// field by field, and the JSON of answers and of streamed chunks. No HTTP here: the server
// (launch/http_server.cpp) moves these bodies.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "runtime/engine.h"

namespace tessera {

enum class Endpoint { kCompletions, kChat };

// A request the API refuses: the HTTP status and OpenAI's error object fields.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string type = "invalid_request_error",
           std::string code = "")
      : std::runtime_error(message),
        status_(status),
        type_(std::move(type)),
        code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string type_, code_;
};

// {"error": {"message", "type", "param", "code"}}
std::string error_body(const std::string& message, const std::string& type,
                       const std::string& code = "");

struct ApiLimits {
  std::string model_name;          // the one model served ("model" must name it)
  int64_t context_window = 0;      // prompt + output tokens
  int64_t default_max_tokens = 0;  // when max_tokens is absent (0: what the window leaves)
  int max_n = 16;                  // choices per request
};

struct ApiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  std::vector<GenerationRequest> choices;  // n of them; choice i samples with seed + i
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int logprobs = -1;           // top alternatives per token (-1: no log-probabilities)
  int64_t prompt_tokens = 0;
};

// Parses and checks a body (invalid JSON, wrong types, unknown fields, an unknown model, a
// prompt or max_tokens past the context window: ApiError naming the problem). `check` runs the
// engine's own checks on each choice (Engine::check_fits), whose errors become 400s too.
ApiRequest parse_api_request(Endpoint endpoint, const std::string& body, const ApiLimits& limits,
                             const Tokenizer& tokenizer,
                             const std::function<void(const GenerationRequest&)>& check = {});

// What a finished choice reports, and the parts of the answer that do not change.
struct ApiAnswer {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string id;       // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
  int logprobs = -1;
};

// The token's text as the API shows it (its bytes, malformed UTF-8 replaced).
std::string token_text(const Tokenizer& tokenizer, int32_t id);

// The whole answer (stream = false): one choice per result, and usage.
std::string answer_body(const ApiAnswer& a, const Tokenizer& tokenizer,
                        const std::vector<GenerationResult>& results);

// One streamed chunk of choice `index`: new text, the log-probabilities of the tokens
// [first_token, first_token + count) of `so_far`, and finish_reason when it is the last.
// Chat streams start each choice with a chunk whose delta holds the role (role_chunk).
std::string chunk_body(const ApiAnswer& a, const Tokenizer& tokenizer, int index,
                       const std::string& text, const GenerationResult& so_far, size_t first_token,
                       size_t count, const std::string& finish_reason);
std::string role_chunk(const ApiAnswer& a, int index);
// The last chunk with stream_options.include_usage: no choices, the usage of all of them.
std::string usage_chunk(const ApiAnswer& a, int64_t prompt_tokens, int64_t completion_tokens);

}  // namespace tessera
