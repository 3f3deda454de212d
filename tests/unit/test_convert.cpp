// Import arithmetic: Hugging Face configs (the published presets in configs/), GGUF metadata, and
// the q/k row permutation GGUF applies for interleaved RoPE.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "io/convert.h"

namespace tessera {
namespace {

using nlohmann::json;

json preset(const std::string& name) {
  std::ifstream in(std::string(TESSERA_TEST_DATA_DIR) + "/../../configs/" + name + ".json");
  EXPECT_TRUE(in) << name;
  return json::parse(in);
}

TEST(ConvertConfig, ParsesEveryPreset) {
  for (const char* name : {"llama-3-8b", "llama-3.1-8b", "llama-3-70b", "llama-2-70b", "qwen2-72b",
                           "smollm2-135m", "mistral-7b-v0.1", "llama-3.1-405b"}) {
    SCOPED_TRACE(name);
    const ModelConfig c = config_from_hf(preset(name), name);
    EXPECT_EQ(c.head_dim * c.num_heads, c.hidden_size);
  }
  const ModelConfig l70 = config_from_hf(preset("llama-3-70b"), "x");
  EXPECT_EQ(l70.num_layers, 80);
  EXPECT_EQ(l70.num_heads, 64);
  EXPECT_EQ(l70.num_kv_heads, 8);
  EXPECT_EQ(l70.head_dim, 128);
  EXPECT_FALSE(l70.attention_bias);
  const ModelConfig l31 = config_from_hf(preset("llama-3.1-8b"), "x");
  EXPECT_EQ(l31.rope_scaling.type, ops::RopeScaling::Type::kLlama3);
  EXPECT_EQ(l31.rope_scaling.factor, 8.0f);
  EXPECT_EQ(l31.rope_scaling.original_max_position, 8192);
  const ModelConfig l405 = config_from_hf(preset("llama-3.1-405b"), "x");
  EXPECT_EQ(l405.num_layers, 126);
  EXPECT_EQ(l405.head_dim, 128);
  EXPECT_TRUE(config_from_hf(preset("qwen2-72b"), "x").attention_bias);  // Qwen2: q/k/v bias
  EXPECT_TRUE(config_from_hf(preset("smollm2-135m"), "x").tie_word_embeddings);
}

TEST(ConvertConfig, RefusesUnknownArchitectureByName) {
  json j = preset("llama-3-8b");
  j["model_type"] = "gpt_neox";
  try {
    config_from_hf(j, "cfg.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gpt_neox"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
  }
  j = preset("llama-3-8b");
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_THROW(config_from_hf(j, "x"), Error);
  j = preset("llama-3-8b");
  j["num_key_value_heads"] = 5;  // 32 query heads are not a multiple of 5
  EXPECT_THROW(config_from_hf(j, "x"), Error);
}

TEST(ConvertConfig, GgufMetadata) {
  json md = {{"general.architecture", "llama"},     {"llama.block_count", 2},
             {"llama.embedding_length", 64},        {"llama.feed_forward_length", 128},
             {"llama.attention.head_count", 4},     {"llama.attention.head_count_kv", 2},
             {"llama.rope.freq_base", 500000.0},    {"llama.context_length", 512},
             {"llama.attention.layer_norm_rms_epsilon", 1e-5}};
  const ModelConfig c = config_from_gguf(md, "m.gguf");
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.rope_theta, 500000.0f);
  md["general.architecture"] = "falcon";
  EXPECT_THROW(config_from_gguf(md, "m.gguf"), Error);
}

TEST(ConvertConfig, GgufTokenizerNeedsTokens) {
  EXPECT_THROW(tokenizer_from_gguf(json::object(), "m.gguf"), Error);
  json md = {{"tokenizer.ggml.model", "gpt2"},
             {"tokenizer.ggml.pre", "llama-bpe"},
             {"tokenizer.ggml.tokens", {"a", "b", "ab"}},
             {"tokenizer.ggml.merges", {"a b"}},
             {"tokenizer.ggml.bos_token_id", 0},
             {"tokenizer.ggml.eos_token_id", 2},
             {"tokenizer.ggml.eot_token_id", 1}};
  const TokenizerData t = tokenizer_from_gguf(md, "m.gguf");
  EXPECT_EQ(t.model, "bpe_byte");
  EXPECT_EQ(t.pre, "llama3");
  EXPECT_EQ(t.stop_ids, (std::vector<int32_t>{2, 1}));
  md["tokenizer.ggml.model"] = "rwkv";
  EXPECT_THROW(tokenizer_from_gguf(md, "m.gguf"), Error);
}

// llama.cpp's converter: w.reshape(heads, 2, head_dim / 2, cols).swapaxes(1, 2).reshape(...)
std::vector<float> gguf_permute(const std::vector<float>& w, int64_t heads, int64_t hd, int64_t cols) {
  std::vector<float> out(w.size());
  const int64_t half = hd / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t p = 0; p < 2; ++p)
      for (int64_t i = 0; i < half; ++i)
        for (int64_t c = 0; c < cols; ++c)
          out[size_t(((h * half + i) * 2 + p) * cols + c)] = w[size_t(((h * 2 + p) * half + i) * cols + c)];
  return out;
}

TEST(ConvertRope, UnpermuteInvertsGgufPermutation) {
  const int64_t heads = 3, hd = 8, cols = 5;
  std::vector<float> w(size_t(heads * hd * cols));
  std::iota(w.begin(), w.end(), 0.0f);
  std::vector<float> permuted = gguf_permute(w, heads, hd, cols);
  ASSERT_NE(permuted, w);
  unpermute_rope_rows(reinterpret_cast<uint8_t*>(permuted.data()), heads, hd,
                      size_t(cols) * sizeof(float));
  EXPECT_EQ(permuted, w);
}

}  // namespace
}  // namespace tessera
