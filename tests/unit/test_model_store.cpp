// The HDF5 model file: everything written is read back the same, slices read only their part,
// and a damaged or foreign file is refused with a message naming it.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "io/model_store.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

ModelConfig tiny_config() {
  ModelConfig c;
  c.architecture = "qwen2";
  c.vocab_size = 10;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_layers = 1;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  c.max_position_embeddings = 32;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 1e6f;
  c.rope_scaling.type = ops::RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 8;
  c.tie_word_embeddings = true;
  c.attention_bias = true;
  return c;
}

TokenizerData tiny_tokenizer() {
  TokenizerData t;
  t.model = "bpe_byte";
  t.pre = "llama3";
  t.tokens = {"a", "b", "ab", "<s>", std::string("\0x", 2)};
  t.merges = {"a b"};
  t.token_types = {1, 1, 1, 3, 1};
  t.bos_id = 3;
  t.eos_id = 3;
  t.stop_ids = {3};
  t.chat_template = "{{ messages }}";
  return t;
}

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("tessera_test_" + name)).string();
}

TEST(ModelStore, RoundTripsConfigTokenizerAndWeights) {
  const std::string path = temp_path("roundtrip.h5");
  std::vector<float> w(60);
  std::mt19937 g(1);
  for (float& x : w) x = std::normal_distribution<float>(0, 1)(g);
  {
    ModelWriter wr(path);
    wr.write_config(tiny_config(), "unit test");
    wr.write_tokenizer(tiny_tokenizer());
    wr.write_weight("a_f32", {6, 10}, w.data(), DType::kF32);
    wr.write_weight("a_f16", {6, 10}, w.data(), DType::kF16);
    wr.write_weight("a_bf16", {60}, w.data(), DType::kBF16);
    wr.finish();
  }
  ModelReader r(path);
  const ModelConfig& c = r.config();
  EXPECT_EQ(c.architecture, "qwen2");
  EXPECT_EQ(c.num_kv_heads, 1);
  EXPECT_EQ(c.rope_theta, 1e6f);
  EXPECT_EQ(c.rope_scaling.type, ops::RopeScaling::Type::kLlama3);
  EXPECT_TRUE(c.tie_word_embeddings && c.attention_bias);
  EXPECT_EQ(r.source(), "unit test");
  const TokenizerData t = r.read_tokenizer();
  EXPECT_EQ(t.tokens, tiny_tokenizer().tokens);  // embedded NUL survives
  EXPECT_EQ(t.merges, tiny_tokenizer().merges);
  EXPECT_EQ(t.pre, "llama3");
  EXPECT_EQ(t.chat_template, "{{ messages }}");
  EXPECT_EQ(t.bos_id, 3);

  EXPECT_EQ(r.read_weight("a_f32").to_f32_vector(), w);
  const auto f16 = r.read_weight("a_f16").to_f32_vector();
  const auto bf16 = r.read_weight("a_bf16").to_f32_vector();
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_EQ(f16[i], half_to_float(float_to_half(w[i])));
    EXPECT_EQ(bf16[i], bf16_to_float(float_to_bf16(w[i])));
  }
  EXPECT_EQ(r.weight_info("a_f16").dtype, DType::kF16);
  EXPECT_EQ(r.weight_info("a_bf16").shape, (Shape{60}));

  const uint64_t before = r.bytes_read();
  Tensor s = r.read_weight_slice("a_f32", 2, 5, 3, 7);
  EXPECT_EQ(r.bytes_read() - before, 3u * 4u * 4u);
  EXPECT_EQ(s.shape(), (Shape{3, 4}));
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(s.data<float>()[i * 4 + j], w[size_t((2 + i) * 10 + 3 + j)]);
  EXPECT_THROW(r.read_weight_slice("a_f32", 0, 7, 0, 10), Error);
  EXPECT_THROW(r.read_weight("missing"), Error);
  fs::remove(path);
}

TEST(ModelStore, UnfinishedWriteLeavesNoFile) {
  const std::string path = temp_path("unfinished.h5");
  fs::remove(path);
  {
    ModelWriter wr(path);
    wr.write_config(tiny_config(), "x");
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".partial"));
}

void expect_error_naming(const std::string& path, const std::string& what) {
  try {
    ModelReader r(path);
    FAIL() << "opened " << path;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(ModelStore, RefusesMissingForeignAndTruncatedFiles) {
  expect_error_naming(temp_path("does_not_exist.h5"), "no such model file");
  const std::string text = temp_path("text.h5");
  std::ofstream(text) << "not hdf5 at all";
  expect_error_naming(text, "not an HDF5 file");
  fs::remove(text);
}

}  // namespace
}  // namespace tessera
