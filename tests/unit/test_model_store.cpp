// The HDF5 model file: everything written is read back the same, slices read only their part,
// and a damaged or foreign file is refused with a message naming it.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include <hdf5.h>

#include <cstring>

#include "io/model_store.h"
#include "kernels/quant.h"

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

void expect_error_naming(const std::string& path, const std::string& what) {
  try {
    ModelReader r(path);
    FAIL() << "opened " << path;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

// A quantized matrix is its blocks: written from floats (quantized) or as bytes (kept), read as
// stored (the same bytes) or as float32 (dequantized), sliced only at block boundaries, and
// counted in bytes read as the blocks' bytes.
TEST(ModelStore, QuantizedWeightsKeepTheirBlocks) {
  const std::string path = temp_path("quantized.h5");
  std::vector<float> w(4 * 512);
  std::mt19937 g(2);
  for (float& x : w) x = std::normal_distribution<float>(0, 1)(g);
  std::vector<uint8_t> blocks(dtype_bytes(DType::kQ8_0, 4 * 64));
  quantize(DType::kQ8_0, w.data(), blocks.data(), 4 * 64);
  {
    ModelWriter wr(path);
    wr.write_config(tiny_config(), "unit test");
    wr.write_tokenizer(tiny_tokenizer());
    wr.write_weight("q4_k", {4, 512}, w.data(), DType::kQ4_K);
    wr.write_weight_bytes("q8_0", {4, 64}, blocks.data(), DType::kQ8_0);
    EXPECT_THROW(wr.write_weight("vector", {512}, w.data(), DType::kQ4_K), Error);
    EXPECT_THROW(wr.write_weight("cut rows", {8, 96}, w.data(), DType::kQ4_K), Error);
    wr.finish();
  }
  ModelReader r(path);
  EXPECT_EQ(r.weight_info("q4_k").shape, (Shape{4, 512}));
  EXPECT_EQ(r.weight_info("q4_k").dtype, DType::kQ4_K);
  EXPECT_EQ(r.weight_info("q4_k").bytes(), 4u * 2u * 144u);
  std::vector<uint8_t> q4k(4 * 2 * 144);
  quantize(DType::kQ4_K, w.data(), q4k.data(), 4 * 512);
  const Tensor stored = r.read_weight_slice("q4_k", 0, 4, 0, 512, ModelReader::As::kStored);
  EXPECT_EQ(stored.dtype(), DType::kQ4_K);
  EXPECT_EQ(std::vector<uint8_t>(static_cast<const uint8_t*>(stored.raw()),
                                 static_cast<const uint8_t*>(stored.raw()) + stored.nbytes()),
            q4k);
  std::vector<float> want(w.size());
  dequantize(DType::kQ4_K, q4k.data(), want.data(), int64_t(w.size()));
  EXPECT_EQ(r.read_weight("q4_k").to_f32_vector(), want);
  // Rows 1..3, the second block of 256 columns: its bytes, and only those are read.
  const uint64_t before = r.bytes_read();
  const Tensor part = r.read_weight_slice("q4_k", 1, 3, 256, 512, ModelReader::As::kStored);
  EXPECT_EQ(r.bytes_read() - before, 2u * 144u);
  EXPECT_EQ(part.shape(), (Shape{2, 256}));
  for (int row = 0; row < 2; ++row)
    EXPECT_EQ(std::memcmp(static_cast<const uint8_t*>(part.raw()) + row * 144,
                          q4k.data() + (1 + row) * 288 + 144, 144),
              0);
  try {
    r.read_weight_slice("q4_k", 0, 4, 0, 128);
    FAIL() << "a slice cutting a block was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks of 256"), std::string::npos) << e.what();
  }
  const Tensor kept = r.read_weight_slice("q8_0", 0, 4, 0, 64, ModelReader::As::kStored);
  EXPECT_EQ(std::memcmp(kept.raw(), blocks.data(), blocks.size()), 0);
  fs::remove(path);
}

// Format version 1 (before quantized weights) stored its weights as version 2 does: read. An
// unknown version is refused naming it.
TEST(ModelStore, ReadsFormatVersionOneAndRefusesUnknownVersions) {
  const std::string path = temp_path("versions.h5");
  std::vector<float> w(60, 0.5f);
  {
    ModelWriter wr(path);
    wr.write_config(tiny_config(), "unit test");
    wr.write_tokenizer(tiny_tokenizer());
    wr.write_weight("a_f32", {6, 10}, w.data(), DType::kF32);
    wr.finish();
  }
  const auto set_version = [&](int64_t v) {
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Fclose(f);
  };
  set_version(1);
  EXPECT_EQ(ModelReader(path).read_weight("a_f32").to_f32_vector(), w);
  set_version(7);
  expect_error_naming(path, "model format version 7");
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

TEST(ModelStore, RefusesMissingForeignAndTruncatedFiles) {
  expect_error_naming(temp_path("does_not_exist.h5"), "no such model file");
  const std::string text = temp_path("text.h5");
  std::ofstream(text) << "not hdf5 at all";
  expect_error_naming(text, "not an HDF5 file");
  fs::remove(text);
}

}  // namespace
}  // namespace tessera
