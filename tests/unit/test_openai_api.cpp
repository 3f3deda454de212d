// The OpenAI request bodies (runtime/openai_api.h): each field lands where it should, each kind
// of broken body is refused with the right status and a message naming the problem, and the
// answers and chunks have OpenAI's shape (parsed back with nlohmann::json).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/openai_api.h"
#include "runtime/request.h"

namespace tessera {
namespace {

using nlohmann::json;

Tokenizer test_tokenizer() {
  TokenizerData t = stand_in_tokenizer(300);
  t.chat_template =
      "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
      "{% if add_generation_prompt %}<assistant>{% endif %}";
  return Tokenizer(t);
}

ApiLimits limits() {
  ApiLimits l;
  l.model_name = "tiny";
  l.context_window = 64;
  return l;
}

ApiRequest parse(Endpoint e, const json& body) {
  static const Tokenizer tok = test_tokenizer();
  return parse_api_request(e, body.dump(), limits(), tok);
}

// The status of the ApiError a body gets, and that its message contains `words`.
int refused(Endpoint e, const std::string& body, const std::string& words) {
  static const Tokenizer tok = test_tokenizer();
  try {
    parse_api_request(e, body, limits(), tok);
  } catch (const ApiError& err) {
    EXPECT_NE(std::string(err.what()).find(words), std::string::npos)
        << "message '" << err.what() << "' does not name '" << words << "'";
    return err.status();
  }
  ADD_FAILURE() << "accepted: " << body;
  return 0;
}

TEST(OpenAiApi, CompletionFieldsLandInTheGenerationRequest) {
  const ApiRequest r =
      parse(Endpoint::kCompletions, {{"model", "tiny"},
                                     {"prompt", "hello"},
                                     {"max_tokens", 7},
                                     {"temperature", 0.5},
                                     {"top_p", 0.9},
                                     {"top_k", 4},
                                     {"min_p", 0.1},
                                     {"seed", 11},
                                     {"stop", {"x", "yz"}},
                                     {"n", 3},
                                     {"logprobs", 2},
                                     {"stream", true},
                                     {"stream_options", {{"include_usage", true}}}});
  ASSERT_EQ(r.choices.size(), 3u);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.logprobs, 2);
  for (size_t i = 0; i < 3; ++i) {
    const GenerationRequest& g = r.choices[i];
    EXPECT_EQ(g.max_tokens, 7);
    EXPECT_FLOAT_EQ(g.sampling.temperature, 0.5f);
    EXPECT_FLOAT_EQ(g.sampling.top_p, 0.9f);
    EXPECT_EQ(g.sampling.top_k, 4);
    EXPECT_FLOAT_EQ(g.sampling.min_p, 0.1f);
    EXPECT_EQ(g.sampling.seed, 11u + i);  // each choice its own seed
    EXPECT_EQ(g.sampling.logprobs, 2);
    EXPECT_EQ(g.stop, (std::vector<std::string>{"x", "yz"}));
  }
  EXPECT_EQ(r.choices[0].prompt, tokenize_prompt(test_tokenizer(), "hello", false));
  EXPECT_EQ(r.prompt_tokens, int64_t(r.choices[0].prompt.size()));
}

TEST(OpenAiApi, ChatIsRenderedWithTheTemplateAndMaxTokensDefaultsToTheWindow) {
  const ApiRequest r =
      parse(Endpoint::kChat, {{"model", "tiny"},
                              {"messages", {{{"role", "user"}, {"content", "hi"}}}},
                              {"logprobs", true},
                              {"top_logprobs", 3}});
  ASSERT_EQ(r.choices.size(), 1u);
  const Tokenizer tok = test_tokenizer();
  EXPECT_EQ(r.choices[0].prompt, tokenize_prompt(tok, "<user>hi<assistant>", true));
  EXPECT_EQ(r.choices[0].max_tokens, 64 - r.prompt_tokens);
  EXPECT_EQ(r.logprobs, 3);
  // Content parts are joined.
  const ApiRequest parts = parse(
      Endpoint::kChat,
      {{"model", "tiny"},
       {"messages",
        {{{"role", "user"},
          {"content", {{{"type", "text"}, {"text", "h"}}, {{"type", "text"}, {"text", "i"}}}}}}}});
  EXPECT_EQ(parts.choices[0].prompt, r.choices[0].prompt);
  // Token ids as a completion prompt.
  const ApiRequest ids = parse(Endpoint::kCompletions, {{"model", "tiny"}, {"prompt", {5, 6, 7}}});
  EXPECT_EQ(ids.choices[0].prompt, (std::vector<int32_t>{5, 6, 7}));
}

TEST(OpenAiApi, BrokenBodiesAreRefusedNamingTheProblem) {
  const auto C = Endpoint::kCompletions, H = Endpoint::kChat;
  EXPECT_EQ(refused(C, "{\"model\": \"tiny\", \"prompt\": ", "malformed JSON"), 400);
  EXPECT_EQ(refused(C, "[1, 2]", "JSON object"), 400);
  EXPECT_EQ(refused(C, R"({"prompt": "a"})", "'model' is required"), 400);
  EXPECT_EQ(refused(C, R"({"model": "big", "prompt": "a"})", "'big' does not exist"), 404);
  EXPECT_EQ(refused(C, R"({"model": 3, "prompt": "a"})", "'model' must be a string"), 400);
  EXPECT_EQ(refused(C, R"({"model": "tiny"})", "'prompt' is required"), 400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": 5})", "'prompt' must be"), 400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": ["a", "b"]})", "several prompts"), 400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": [1, 999]})", "outside the vocabulary"), 400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": "a", "max_tokens": "3"})", "integer"), 400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": "a", "max_tokens": 0})", "at least 1"), 400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": "a", "max_tokens": 100})", "window is 64"),
            400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": ")" + std::string(70, 'a') + R"("})",
                    "context window is 64"),
            400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": "a", "temperature": -1})", "temperature"),
            400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": "a", "top_p": 0})", "top_p"), 400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": "a", "n": 0})", "'n' must be in"), 400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": "a", "logprobs": 21})", "[0, 20]"), 400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": "a", "stream": "yes"})", "true or false"),
            400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": "a", "stream_options": {}})",
                    "needs \"stream\": true"),
            400);
  EXPECT_EQ(
      refused(C, R"({"model": "tiny", "prompt": "a", "colour": 1})", "unknown field 'colour'"),
      400);
  EXPECT_EQ(
      refused(C, R"({"model": "tiny", "prompt": "a", "presence_penalty": 1})", "not supported"),
      400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": "a", "stop": [""]})", "non-empty"), 400);
  EXPECT_EQ(refused(C, "{\"model\": " + std::string(20000, '[') + std::string(20000, ']') + "}",
                    "nested deeper than 64"),
            400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": "a", "max_tokens": 9223372036854775807})",
                    "window is 64"),
            400);
  EXPECT_EQ(refused(C, R"({"model": "tiny", "prompt": "a", "max_tokens": 1e300})", "integer"), 400);
  EXPECT_EQ(
      refused(C,
              R"({"model": "tiny", "prompt": "a", "stop": [")" + std::string(300, 'x') + R"("]})",
              "at most 256"),
      400);
  EXPECT_EQ(refused(H, R"({"model": "tiny", "messages": []})", "non-empty array"), 400);
  EXPECT_EQ(refused(H, R"({"model": "tiny", "messages": [{"role": "user"}]})", "'content'"), 400);
  EXPECT_EQ(refused(H, R"({"model": "tiny", "prompt": "a"})", "unknown field 'prompt'"), 400);
  EXPECT_EQ(refused(H, R"({"model": "tiny", "messages": [{"role": "user", "content": "a"}],
                           "top_logprobs": 2})",
                    "needs \"logprobs\": true"),
            400);
}

TEST(OpenAiApi, EngineChecksBecome400s) {
  const Tokenizer tok = test_tokenizer();
  const auto check = [](const GenerationRequest&) { TESSERA_FAIL("the KV cache is too small"); };
  try {
    parse_api_request(Endpoint::kCompletions, R"({"model": "tiny", "prompt": "a"})", limits(), tok,
                      check);
    FAIL() << "accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_NE(std::string(e.what()).find("KV cache"), std::string::npos);
  }
}

GenerationResult result_of(const Tokenizer& tok, std::vector<int32_t> tokens) {
  GenerationResult r;
  r.tokens = std::move(tokens);
  r.text = tok.decode(r.tokens);
  r.prompt_tokens = 4;
  r.finish_reason = "length";
  for (size_t i = 0; i < r.tokens.size(); ++i)
    r.logprobs.push_back({-0.5f * float(i + 1), {{r.tokens[i], -0.5f * float(i + 1)}, {7, -3.0f}}});
  return r;
}

TEST(OpenAiApi, AnswersAndChunksHaveOpenAisShape) {
  const Tokenizer tok = test_tokenizer();
  ApiAnswer a{Endpoint::kChat, "chatcmpl-1", 1700000000, "tiny", 1};
  const GenerationResult r = result_of(tok, {'h', 'i'});
  const json whole = json::parse(answer_body(a, tok, {r, r}));
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["choices"].size(), 2u);
  EXPECT_EQ(whole["choices"][1]["index"], 1);
  EXPECT_EQ(whole["choices"][0]["message"]["content"], "hi");
  EXPECT_EQ(whole["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(whole["usage"]["prompt_tokens"], 4);
  EXPECT_EQ(whole["usage"]["completion_tokens"], 4);
  EXPECT_EQ(whole["usage"]["total_tokens"], 8);
  const json& content = whole["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[1]["token"], "i");
  EXPECT_FLOAT_EQ(content[1]["logprob"].get<float>(), -1.0f);
  EXPECT_EQ(content[1]["bytes"], json::array({int('i')}));
  EXPECT_EQ(content[1]["top_logprobs"].size(), 2u);

  const json chunk = json::parse(chunk_body(a, tok, 1, "i", r, 1, 1, ""));
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_EQ(chunk["choices"][0]["index"], 1);
  EXPECT_EQ(chunk["choices"][0]["delta"]["content"], "i");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["content"].size(), 1u);
  const json last = json::parse(chunk_body(a, tok, 0, "", r, 2, 0, "stop"));
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  const json role = json::parse(role_chunk(a, 0));
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  const json usage = json::parse(usage_chunk(a, 4, 9));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 13);

  ApiAnswer c{Endpoint::kCompletions, "cmpl-1", 1700000000, "tiny", 1};
  const json text = json::parse(answer_body(c, tok, {r}));
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "hi");
  const json& lp = text["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], json::array({"h", "i"}));
  EXPECT_EQ(lp["text_offset"], json::array({0, 1}));
  EXPECT_FLOAT_EQ(lp["token_logprobs"][0].get<float>(), -0.5f);
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  c.logprobs = -1;
  EXPECT_TRUE(json::parse(answer_body(c, tok, {r}))["choices"][0]["logprobs"].is_null());
  const json err = json::parse(error_body("bad thing", "invalid_request_error", "x"));
  EXPECT_EQ(err["error"]["message"], "bad thing");
  EXPECT_EQ(err["error"]["code"], "x");
}

}  // namespace
}  // namespace tessera
