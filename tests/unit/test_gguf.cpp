// GGUF reader and GGML dequantization: files are written by a small writer below, following the
// GGUF spec, and read back; quantized blocks are checked against values worked out by hand.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io/ggml_quant.h"
#include "io/gguf.h"
#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/quant.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using VT = GgufValueType;

// Appends little-endian values to a byte string.
struct Bytes {
  std::string s;
  template <class T>
  Bytes& put(T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& v) {
    put<uint64_t>(v.size());
    s += v;
    return *this;
  }
};

// A minimal GGUF writer. Tensor dims are given in GGUF order (ne[0] first).
class GgufBuilder {
 public:
  uint32_t version = 3;
  uint64_t alignment = 32;

  template <class T>
  GgufBuilder& scalar(const std::string& key, VT type, T v) {
    kv_.str(key).put<uint32_t>(uint32_t(type)).put<T>(v);
    ++n_kv_;
    return *this;
  }
  GgufBuilder& string(const std::string& key, const std::string& v) {
    kv_.str(key).put<uint32_t>(uint32_t(VT::kString)).str(v);
    ++n_kv_;
    return *this;
  }
  template <class T>
  GgufBuilder& array(const std::string& key, VT elem, const std::vector<T>& v) {
    kv_.str(key).put<uint32_t>(uint32_t(VT::kArray)).put<uint32_t>(uint32_t(elem));
    kv_.put<uint64_t>(v.size());
    for (const T& x : v) kv_.put<T>(x);
    ++n_kv_;
    return *this;
  }
  GgufBuilder& strings(const std::string& key, const std::vector<std::string>& v) {
    kv_.str(key).put<uint32_t>(uint32_t(VT::kArray)).put<uint32_t>(uint32_t(VT::kString));
    kv_.put<uint64_t>(v.size());
    for (const std::string& x : v) kv_.str(x);
    ++n_kv_;
    return *this;
  }
  // Raw key/value bytes appended as they are (for nested arrays and corrupt values).
  GgufBuilder& raw_kv(const std::string& bytes) {
    kv_.s += bytes;
    ++n_kv_;
    return *this;
  }
  GgufBuilder& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type,
                      std::string data) {
    tensors_.push_back({name, std::move(ne), type, std::move(data)});
    return *this;
  }

  std::string build() const {
    Bytes b;
    b.put<uint32_t>(0x46554747).put<uint32_t>(version);
    b.put<uint64_t>(tensors_.size()).put<uint64_t>(n_kv_);
    b.s += kv_.s;
    uint64_t off = 0;
    std::vector<uint64_t> offsets;
    for (const T& t : tensors_) {
      b.str(t.name).put<uint32_t>(uint32_t(t.ne.size()));
      for (uint64_t d : t.ne) b.put<uint64_t>(d);
      b.put<uint32_t>(t.type).put<uint64_t>(off);
      offsets.push_back(off);
      off = pad(off + t.data.size());
    }
    b.s.resize(pad(b.s.size()), '\0');
    const size_t data_start = b.s.size();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      b.s.resize(data_start + offsets[i], '\0');
      b.s += tensors_[i].data;
    }
    return b.s;
  }

 private:
  struct T {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::string data;
  };
  uint64_t pad(uint64_t x) const { return (x + alignment - 1) / alignment * alignment; }
  Bytes kv_;
  uint64_t n_kv_ = 0;
  std::vector<T> tensors_;
};

template <class T>
std::string as_bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "tessera_gguf_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& bytes, const std::string& name = "model.gguf") {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
    return path;
  }

  // Opening (and reading every decodable tensor of) `bytes` must throw a tessera::Error that
  // names the file and contains `needle`.
  void expect_error(const std::string& bytes, const std::string& needle = "") {
    const std::string path = write(bytes, "bad.gguf");
    try {
      GgufFile g = GgufFile::open(path);
      for (const auto& t : g.tensors()) {
        if (ggml_can_dequantize(t.ggml_type)) g.read_f32(t);
      }
      ADD_FAILURE() << "no error for a file of " << bytes.size() << " bytes";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }

  fs::path dir_;
};

GgufBuilder sample_file() {
  GgufBuilder b;
  b.string("general.architecture", "llama")
      .scalar<uint32_t>("llama.context_length", VT::kU32, 2048)
      .strings("tokenizer.ggml.tokens", {"<s>", "</s>", "hello", ""})
      .array<float>("tokenizer.ggml.scores", VT::kF32, {0.f, -1.f, 2.5f, 3.f});
  b.tensor("a.weight", {3, 2}, 0, as_bytes(std::vector<float>{1, 2, 3, 4, 5, 6}));
  std::string q8(34, '\0');
  q8[0] = 0x00, q8[1] = 0x38;  // d = 0.5
  for (int i = 0; i < 32; ++i) q8[2 + i] = char(i - 16);
  b.tensor("b.weight", {32}, 8, q8);
  return b;
}

TEST_F(GgufTest, MetadataOfEveryType) {
  std::string nested;  // array of two arrays of u16
  {
    Bytes k;
    k.str("nested").put<uint32_t>(uint32_t(VT::kArray)).put<uint32_t>(uint32_t(VT::kArray));
    k.put<uint64_t>(2);
    k.put<uint32_t>(uint32_t(VT::kU16)).put<uint64_t>(2).put<uint16_t>(1).put<uint16_t>(2);
    k.put<uint32_t>(uint32_t(VT::kU16)).put<uint64_t>(0);
    nested = k.s;
  }
  GgufBuilder b;
  b.scalar<uint8_t>("u8", VT::kU8, 200)
      .scalar<int8_t>("i8", VT::kI8, -5)
      .scalar<uint16_t>("u16", VT::kU16, 60000)
      .scalar<int16_t>("i16", VT::kI16, -30000)
      .scalar<uint32_t>("u32", VT::kU32, 4000000000u)
      .scalar<int32_t>("i32", VT::kI32, -2000000000)
      .scalar<float>("f32", VT::kF32, 1.25f)
      .scalar<uint8_t>("bool", VT::kBool, 1)
      .string("str", "h\xc3\xa9llo")
      .scalar<uint64_t>("u64", VT::kU64, (uint64_t(1) << 63) + 5)
      .scalar<int64_t>("i64", VT::kI64, -(int64_t(1) << 62))
      .scalar<double>("f64", VT::kF64, 0.1)
      .array<int32_t>("ints", VT::kI32, {1, -2, 3})
      .array<uint8_t>("bools", VT::kBool, {1, 0})
      .strings("strs", {"a", "", "ccc"})
      .strings("empty", {})
      .raw_kv(nested);
  for (uint32_t version : {2u, 3u}) {
    b.version = version;
    const GgufFile g = GgufFile::open(write(b.build()));
    EXPECT_EQ(g.version(), version);
    const nlohmann::json& m = g.metadata();
    EXPECT_EQ(m.size(), 17u);
    EXPECT_EQ(m["u8"].get<int>(), 200);
    EXPECT_EQ(m["i8"].get<int>(), -5);
    EXPECT_EQ(m["u16"].get<int>(), 60000);
    EXPECT_EQ(m["i16"].get<int>(), -30000);
    EXPECT_EQ(m["u32"].get<uint32_t>(), 4000000000u);
    EXPECT_EQ(m["i32"].get<int32_t>(), -2000000000);
    EXPECT_EQ(m["f32"].get<double>(), 1.25);
    EXPECT_EQ(m["bool"].get<bool>(), true);
    EXPECT_EQ(m["str"].get<std::string>(), "h\xc3\xa9llo");
    EXPECT_EQ(m["u64"].get<uint64_t>(), (uint64_t(1) << 63) + 5);
    EXPECT_EQ(m["i64"].get<int64_t>(), -(int64_t(1) << 62));
    EXPECT_EQ(m["f64"].get<double>(), 0.1);
    EXPECT_EQ(m["ints"], nlohmann::json({1, -2, 3}));
    EXPECT_EQ(m["bools"], nlohmann::json({true, false}));
    EXPECT_EQ(m["strs"], nlohmann::json({"a", "", "ccc"}));
    EXPECT_TRUE(m["empty"].is_array() && m["empty"].empty());
    EXPECT_EQ(m["nested"], nlohmann::json::parse("[[1,2],[]]"));
    EXPECT_EQ(g.metadata_type("f32")->type, VT::kF32);
    EXPECT_EQ(g.metadata_type("strs")->type, VT::kArray);
    EXPECT_EQ(g.metadata_type("strs")->elem_type, VT::kString);
    EXPECT_EQ(g.metadata_type("nested")->elem_type, VT::kArray);
    EXPECT_FALSE(g.metadata_type("missing").has_value());
    EXPECT_TRUE(g.tensors().empty());
    EXPECT_EQ(g.alignment(), 32u);
  }
}

TEST_F(GgufTest, FloatTensorsRoundTrip) {
  const std::vector<float> f32 = {1.5f, -2.f, 3.25f, 0.f, 1e-3f, -7.f};
  std::vector<uint16_t> f16, bf16;
  for (float x : f32) f16.push_back(float_to_half(x)), bf16.push_back(float_to_bf16(x));
  GgufBuilder b;
  b.tensor("f32", {3, 2}, 0, as_bytes(f32))
      .tensor("f16", {2, 3}, 1, as_bytes(f16))
      .tensor("bf16", {1, 2, 3}, 30, as_bytes(bf16))
      .tensor("vec", {6}, 0, as_bytes(f32));
  const GgufFile g = GgufFile::open(write(b.build()));
  ASSERT_EQ(g.tensors().size(), 4u);
  const GgufTensorInfo& t = g.at("f32");
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));  // row-major: ne reversed
  EXPECT_EQ(t.nbytes, 24u);
  EXPECT_EQ(t.offset % 32, 0u);
  EXPECT_EQ(t.offset, g.data_offset());
  EXPECT_EQ(GgufFile::type_name(t.ggml_type), "F32");
  EXPECT_EQ(g.read_f32(t), f32);
  EXPECT_EQ(g.at("f16").shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(g.at("bf16").shape, (std::vector<int64_t>{3, 2, 1}));
  EXPECT_EQ(g.at("vec").shape, (std::vector<int64_t>{6}));
  std::vector<float> want_bf16;
  for (uint16_t x : bf16) want_bf16.push_back(bf16_to_float(x));
  std::vector<float> want_f16;
  for (uint16_t x : f16) want_f16.push_back(half_to_float(x));
  EXPECT_EQ(g.read_f32(g.at("f16")), want_f16);
  EXPECT_EQ(g.read_f32(g.at("bf16")), want_bf16);
  EXPECT_EQ(g.read_f32(g.at("f16"))[3], 0.f);
  EXPECT_EQ(g.read_f32(g.at("bf16"))[0], 1.5f);
  EXPECT_EQ(g.find("nope"), nullptr);
  EXPECT_THROW(g.at("nope"), Error);
  EXPECT_EQ(g.raw(t).size(), 24u);
}

TEST_F(GgufTest, Q8_0ByHand) {
  std::string blocks(68, '\0');
  blocks[0] = 0x00, blocks[1] = 0x38;          // d = 0.5
  blocks[34] = 0x00, blocks[35] = char(0xc0);  // d = -2
  for (int i = 0; i < 32; ++i) {
    blocks[2 + i] = char(i - 16);
    blocks[36 + i] = char(i == 0 ? -128 : i == 1 ? 127 : i);
  }
  GgufBuilder b;
  b.tensor("q", {32, 2}, 8, blocks);
  const GgufFile g = GgufFile::open(write(b.build()));
  const std::vector<float> v = g.read_f32(g.at("q"));
  ASSERT_EQ(v.size(), 64u);
  EXPECT_EQ(v[0], -8.f);  // -16 * 0.5
  EXPECT_EQ(v[16], 0.f);
  EXPECT_EQ(v[31], 7.5f);    // 15 * 0.5
  EXPECT_EQ(v[32], 256.f);   // -128 * -2
  EXPECT_EQ(v[33], -254.f);  // 127 * -2
  EXPECT_EQ(v[34], -4.f);    // 2 * -2
  EXPECT_EQ(v[63], -62.f);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(v[i], (i - 16) * 0.5f);
}

TEST_F(GgufTest, Q4_0ByHand) {
  std::string block(18, '\0');
  block[0] = 0x00, block[1] = 0x40;  // d = 2
  for (int j = 0; j < 16; ++j) block[2 + j] = char(j | ((15 - j) << 4));
  GgufBuilder b;
  b.tensor("q", {32}, 2, block);
  const GgufFile g = GgufFile::open(write(b.build()));
  const std::vector<float> v = g.read_f32(g.at("q"));
  ASSERT_EQ(v.size(), 32u);
  // Low nibbles are elements 0..15, high nibbles 16..31; value (q - 8) * d.
  EXPECT_EQ(v[0], -16.f);  // (0 - 8) * 2
  EXPECT_EQ(v[8], 0.f);
  EXPECT_EQ(v[15], 14.f);   // (15 - 8) * 2
  EXPECT_EQ(v[16], 14.f);   // hi(qs[0]) = 15
  EXPECT_EQ(v[31], -16.f);  // hi(qs[15]) = 0
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(v[j], float((j - 8) * 2));
    EXPECT_EQ(v[16 + j], float((7 - j) * 2));
  }
}

TEST_F(GgufTest, Q4_1ByHand) {
  std::string block(20, '\0');
  block[0] = 0x00, block[1] = 0x34;        // d = 0.25
  block[2] = 0x00, block[3] = char(0xbc);  // m = -1
  for (int j = 0; j < 16; ++j) block[4 + j] = char(((j + 3) % 16) | (j << 4));
  GgufBuilder b;
  b.tensor("q", {32}, 3, block);
  const GgufFile g = GgufFile::open(write(b.build()));
  const std::vector<float> v = g.read_f32(g.at("q"));
  ASSERT_EQ(v.size(), 32u);
  EXPECT_EQ(v[0], -0.25f);  // 3 * 0.25 - 1
  EXPECT_EQ(v[13], -1.f);   // lo = 0
  EXPECT_EQ(v[12], 2.75f);  // lo = 15
  EXPECT_EQ(v[16], -1.f);   // hi = 0
  EXPECT_EQ(v[31], 2.75f);  // hi = 15
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(v[j], ((j + 3) % 16) * 0.25f - 1.f);
    EXPECT_EQ(v[16 + j], j * 0.25f - 1.f);
  }
  // The standalone decoders agree with the file path.
  std::vector<float> direct(32);
  dequantize(DType::kQ4_1, block.data(), direct.data(), 32);
  EXPECT_EQ(direct, v);
}

TEST_F(GgufTest, UnsupportedTypeNamesTensorAndType) {
  GgufBuilder b;
  b.tensor("blk.0.ffn_down.weight", {256}, 10, std::string(84, '\0'));  // Q2_K
  const std::string path = write(b.build());
  const GgufFile g = GgufFile::open(path);
  const GgufTensorInfo& t = g.at("blk.0.ffn_down.weight");
  EXPECT_EQ(t.nbytes, 84u);
  EXPECT_EQ(GgufFile::type_name(t.ggml_type), "Q2_K");
  try {
    g.read_f32(t);
    FAIL() << "Q2_K decoded";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("Q2_K"), std::string::npos) << msg;
    EXPECT_NE(msg.find("blk.0.ffn_down.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
  EXPECT_EQ(ggml_type_name(99), "unknown(99)");
  EXPECT_EQ(ggml_type_name(12), "Q4_K");
}

TEST_F(GgufTest, CustomAlignment) {
  for (uint32_t align : {1u, 8u, 64u}) {
    GgufBuilder b;
    b.alignment = align;
    b.scalar<uint32_t>("general.alignment", VT::kU32, align);
    b.tensor("x", {3}, 1, as_bytes(std::vector<uint16_t>{0x3c00, 0x4000, 0x4200}));
    b.tensor("y", {2}, 0, as_bytes(std::vector<float>{4, 5}));
    const GgufFile g = GgufFile::open(write(b.build()));
    EXPECT_EQ(g.alignment(), align);
    EXPECT_EQ(g.data_offset() % align, 0u);
    EXPECT_EQ(g.read_f32(g.at("x")), (std::vector<float>{1, 2, 3}));  // unaligned f16 for 1
    EXPECT_EQ(g.read_f32(g.at("y")), (std::vector<float>{4, 5}));
  }
}

TEST_F(GgufTest, RejectsBadHeaders) {
  std::string good = sample_file().build();
  ASSERT_NO_THROW(GgufFile::open(write(good)));
  std::string bad = good;
  bad[0] = 'X';
  expect_error(bad, "bad magic");
  expect_error("", "truncated");
  GgufBuilder b = sample_file();
  b.version = 1;
  expect_error(b.build(), "version 1");
  b.version = 4;
  expect_error(b.build(), "version 4");
  bad = good;
  std::memcpy(bad.data() + 4, "\0\0\0\3", 4);
  expect_error(bad, "big-endian");
  bad = good;
  const uint64_t huge = uint64_t(1) << 60;
  std::memcpy(bad.data() + 8, &huge, 8);
  expect_error(bad, "tensor count");
  bad = good;
  std::memcpy(bad.data() + 16, &huge, 8);
  expect_error(bad, "metadata count");
  bad = good;
  std::memcpy(bad.data() + 24, &huge, 8);  // length of the first key
  expect_error(bad, "truncated");
}

TEST_F(GgufTest, RejectsBadValues) {
  {
    GgufBuilder b;  // array claiming 2^40 strings
    Bytes k;
    k.str("toks").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(uint64_t(1) << 40);
    b.raw_kv(k.s);
    expect_error(b.build(), "array elements");
  }
  {
    GgufBuilder b;
    Bytes k;
    k.str("x").put<uint32_t>(13).put<uint32_t>(0);
    b.raw_kv(k.s);
    expect_error(b.build(), "unknown value type 13");
  }
  {
    GgufBuilder b;
    Bytes k;
    k.str("x").put<uint32_t>(9).put<uint32_t>(77).put<uint64_t>(1);
    b.raw_kv(k.s);
    expect_error(b.build(), "unknown value type 77");
  }
  {
    GgufBuilder b;
    b.scalar<uint32_t>("k", VT::kU32, 1).scalar<uint32_t>("k", VT::kU32, 2);
    expect_error(b.build(), "appears twice");
  }
  {
    GgufBuilder b;
    b.scalar<uint32_t>("general.alignment", VT::kU32, 24);
    expect_error(b.build(), "power of two");
  }
  {
    GgufBuilder b;
    b.string("general.alignment", "32");
    expect_error(b.build(), "general.alignment");
  }
  {
    GgufBuilder b;  // deeply nested arrays
    Bytes k;
    k.str("deep").put<uint32_t>(9);
    for (int i = 0; i < 20; ++i) k.put<uint32_t>(9).put<uint64_t>(1);
    k.put<uint32_t>(0).put<uint64_t>(0);
    b.raw_kv(k.s);
    expect_error(b.build(), "deeper");
  }
}

TEST_F(GgufTest, RejectsBadTensorInfos) {
  const std::string f4 = as_bytes(std::vector<float>{1, 2, 3, 4});
  {
    GgufBuilder b;
    b.tensor("t", {2, 2, 1, 1, 1}, 0, f4);
    expect_error(b.build(), "5 dimensions");
  }
  {
    GgufBuilder b;
    b.tensor("t", {uint64_t(1) << 40, uint64_t(1) << 40}, 0, f4);
    expect_error(b.build(), "absurd");
  }
  {
    GgufBuilder b;
    b.tensor("t", {uint64_t(1) << 62}, 0, f4);
    expect_error(b.build(), "absurd");
  }
  {
    GgufBuilder b;
    b.tensor("t", {1000}, 0, f4);
    expect_error(b.build(), "past the end");
  }
  {
    GgufBuilder b;
    b.tensor("t", {4}, 5, f4);
    expect_error(b.build(), "unknown GGML type id 5");
  }
  {
    GgufBuilder b;
    b.tensor("t", {16}, 2, std::string(18, '\0'));
    expect_error(b.build(), "block size 32");
  }
  {
    GgufBuilder b;
    b.tensor("t", {4}, 0, f4).tensor("t", {4}, 0, f4);
    expect_error(b.build(), "appears twice");
  }
  // Offsets: patch the second tensor's offset to overlap the first, then to be misaligned.
  GgufBuilder b;
  b.tensor("first", {16}, 0, std::string(64, '\0')).tensor("second", {4}, 0, f4);
  const std::string good = b.build();
  const size_t pos = good.find("second") + 6 + 4 + 8 + 4;  // name, n_dims, ne[0], type
  uint64_t off;
  std::memcpy(&off, good.data() + pos, 8);
  ASSERT_EQ(off, 64u);
  std::string bad = good;
  off = 32;
  std::memcpy(bad.data() + pos, &off, 8);
  expect_error(bad, "overlap");
  off = 68;
  std::memcpy(bad.data() + pos, &off, 8);
  expect_error(bad, "alignment");
}

TEST_F(GgufTest, EveryTruncationIsAnError) {
  GgufBuilder b = sample_file();
  b.tensor("c", {32}, 3, std::string(20, '\x11'));
  const std::string good = b.build();
  ASSERT_NO_THROW(GgufFile::open(write(good)));
  for (size_t n = 0; n < good.size(); ++n) {
    SCOPED_TRACE(n);
    expect_error(good.substr(0, n));
  }
}

TEST_F(GgufTest, RandomCorruptionNeverCrashes) {
  const std::string good = sample_file().build();
  std::mt19937 rng(1234);
  const std::string path = (dir_ / "fuzz.gguf").string();
  int errors = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string bad = good;
    const int flips = 1 + int(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      const size_t at = rng() % bad.size();
      bad[at] = char(rng() % 3 == 0 ? 0xff : rng());
    }
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bad.data(), bad.size());
    try {
      const GgufFile g = GgufFile::open(path);
      for (const auto& t : g.tensors()) {
        if (ggml_can_dequantize(t.ggml_type)) g.read_f32(t);
      }
    } catch (const Error& e) {
      ++errors;
      ASSERT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(errors, 100);
}

TEST_F(GgufTest, MissingFileIsAnIoError) {
  const std::string path = (dir_ / "absent.gguf").string();
  try {
    GgufFile::open(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
  }
}

}  // namespace
}  // namespace tessera
