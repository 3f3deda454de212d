// Safetensors files and checkpoint folders: written by a small writer below, following the format
// description, and read back; corrupt headers and data must give an error naming the file.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "kernels/dtype.h"
#include "kernels/error.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

template <class T>
std::string as_bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// A minimal safetensors writer: tensors are laid out contiguously in the order added.
class StBuilder {
 public:
  StBuilder& tensor(const std::string& name, const std::string& dtype, std::vector<int64_t> shape,
                    const std::string& data) {
    header_[name] = {{"dtype", dtype},
                     {"shape", shape},
                     {"data_offsets", {data_.size(), data_.size() + data.size()}}};
    data_ += data;
    return *this;
  }
  StBuilder& meta(const std::string& k, const std::string& v) {
    header_["__metadata__"][k] = v;
    return *this;
  }
  json& header() { return header_; }
  std::string& data() { return data_; }

  // Serializes with the header padded by spaces to a multiple of 8, as the reference writer does.
  std::string build() const { return assemble(header_.dump(), data_); }
  static std::string assemble(std::string h, const std::string& data) {
    while ((8 + h.size()) % 8 != 0) h += ' ';
    std::string out(8, '\0');
    const uint64_t n = h.size();
    std::memcpy(out.data(), &n, 8);
    return out + h + data;
  }

 private:
  json header_ = json::object();
  std::string data_;
};

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "tessera_st_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& bytes, const std::string& name = "model.safetensors") {
    const fs::path path = dir_ / name;
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
    return path.string();
  }

  // Opening `bytes` (and reading its float tensors) must throw a tessera::Error naming the file
  // and containing `needle`.
  void expect_error(const std::string& bytes, const std::string& needle = "") {
    const std::string path = write(bytes, "bad.safetensors");
    try {
      const SafetensorsFile f = SafetensorsFile::open(path);
      for (const auto& t : f.tensors()) f.read_f32(t);
      ADD_FAILURE() << "no error for a file of " << bytes.size() << " bytes";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }

  void expect_dir_error(const std::string& dir, const std::string& needle) {
    try {
      SafetensorsCheckpoint::open_dir(dir);
      ADD_FAILURE() << "no error for " << dir;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }

  fs::path dir_;
};

const std::vector<float> kValues = {1.5f, -2.f, 3.25f, 0.f, 1e-3f, -7.f};

StBuilder sample() {
  std::vector<uint16_t> f16, bf16;
  for (float x : kValues) f16.push_back(float_to_half(x)), bf16.push_back(float_to_bf16(x));
  StBuilder b;
  b.tensor("f16", "F16", {3, 2}, as_bytes(f16))  // 12 bytes: the F32 after it is 4-aligned only
      .tensor("f32", "F32", {2, 3}, as_bytes(kValues))
      .tensor("bf16", "BF16", {6}, as_bytes(bf16))
      .tensor("f64", "F64", {1, 2}, as_bytes(std::vector<double>{0.5, -1e10}))
      .tensor("ids", "I64", {2}, as_bytes(std::vector<int64_t>{7, 8}))
      .tensor("scalar", "F32", {}, as_bytes(std::vector<float>{42.f}))
      .tensor("empty", "F32", {0, 4}, "")
      .meta("format", "pt");
  return b;
}

TEST_F(SafetensorsTest, RoundTrip) {
  const std::string path = write(sample().build());
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), 7u);
  const SafetensorsTensorInfo& t = f.at("f32");
  EXPECT_EQ(t.dtype, "F32");
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.nbytes, 24u);
  EXPECT_EQ(t.file, path);
  EXPECT_EQ(f.read_f32(t), kValues);
  std::vector<float> want_f16, want_bf16;
  for (float x : kValues) {
    want_f16.push_back(half_to_float(float_to_half(x)));
    want_bf16.push_back(bf16_to_float(float_to_bf16(x)));
  }
  EXPECT_EQ(f.read_f32(f.at("f16")), want_f16);
  EXPECT_EQ(f.read_f32(f.at("bf16")), want_bf16);
  EXPECT_EQ(f.read_f32(f.at("f64")), (std::vector<float>{0.5f, -1e10f}));
  EXPECT_EQ(f.read_f32(f.at("scalar")), (std::vector<float>{42.f}));
  EXPECT_EQ(f.at("scalar").numel(), 1);
  EXPECT_TRUE(f.read_f32(f.at("empty")).empty());
  EXPECT_EQ(f.raw(f.at("ids")).size(), 16u);
  EXPECT_EQ(f.find("nope"), nullptr);
  try {
    f.read_f32(f.at("ids"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("I64"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ids"), std::string::npos) << e.what();
  }
  EXPECT_EQ(safetensors_dtype_size("BF16"), 2u);
  EXPECT_EQ(safetensors_dtype_size("Q4"), 0u);
}

TEST_F(SafetensorsTest, RejectsBadHeaders) {
  const std::string good = sample().build();
  expect_error("", "truncated");
  expect_error(good.substr(0, 7), "truncated");
  std::string bad = good;
  const uint64_t huge = uint64_t(1) << 50;
  std::memcpy(bad.data(), &huge, 8);
  expect_error(bad, "truncated");
  expect_error(StBuilder::assemble("[1, 2]", ""), "not a JSON object");
  expect_error(StBuilder::assemble("not json", ""), "not a JSON object");
  expect_error(StBuilder::assemble("{\"a\": {\"dtype\": ", ""), "does not parse");
  expect_error(StBuilder::assemble("{\"a\": 1", ""), "does not parse");
  expect_error(StBuilder::assemble("{\"a\": 1}", ""), "not an object");
  expect_error(
      StBuilder::assemble(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                          R"( "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                          std::string(8, '\0')),
      "appears twice");
  bad = good;
  bad[8] = '[';
  expect_error(bad, "not a JSON object");
}

TEST_F(SafetensorsTest, RejectsBadEntries) {
  const std::string f4(16, '\0');
  auto with = [&](const std::string& key, json value) {
    StBuilder b;
    b.tensor("t", "F32", {4}, f4);
    b.header()["t"][key] = std::move(value);
    return b.build();
  };
  expect_error(with("dtype", "F7"), "unknown dtype F7");
  expect_error(with("dtype", 3), "dtype");
  expect_error(with("shape", {2, 3}), "needs 6 x 4 bytes");
  expect_error(with("shape", {-1, -4}), "negative");
  expect_error(with("shape", {1.5}), "non-integer");
  expect_error(with("shape", {uint64_t(1) << 40, uint64_t(1) << 40}), "absurd");
  expect_error(with("shape", "4"), "shape");
  expect_error(with("data_offsets", {0, 400}), "past the end");
  expect_error(with("data_offsets", {8, 4}), "end before");
  expect_error(with("data_offsets", {0}), "data_offsets");
  expect_error(with("data_offsets", {-4, 12}), "data_offsets");
  {
    StBuilder b;
    b.tensor("t", "F32", {4}, f4);
    b.header()["t"].erase("dtype");
    expect_error(b.build(), "dtype");
  }
  {
    StBuilder b = sample();
    b.header()["__metadata__"]["n"] = 5;
    expect_error(b.build(), "__metadata__");
  }
}

TEST_F(SafetensorsTest, RejectsOverlapsHolesAndTrailingBytes) {
  const std::string f8(32, '\0');
  {
    StBuilder b;
    b.tensor("a", "F32", {4}, f8.substr(16)).tensor("b", "F32", {4}, f8.substr(16));
    b.header()["b"]["data_offsets"] = {8, 24};  // overlaps a
    b.data().resize(24);
    expect_error(b.build(), "overlap");
  }
  {
    StBuilder b;
    b.tensor("a", "F32", {2}, f8.substr(24)).tensor("b", "F32", {4}, f8.substr(16));
    b.header()["b"]["data_offsets"] = {12, 28};  // hole of 4 bytes after a
    b.data().resize(28);
    expect_error(b.build(), "misaligned");
  }
  {
    StBuilder b;
    b.tensor("a", "F32", {4}, f8.substr(16));
    b.data() += "xxxx";
    expect_error(b.build(), "not described");
  }
  {
    StBuilder b;  // data section starts at 4: holes before the first tensor are holes too
    b.tensor("a", "F32", {4}, f8.substr(16));
    b.header()["a"]["data_offsets"] = {4, 20};
    b.data() = "abcd" + b.data();
    expect_error(b.build(), "misaligned");
  }
}

TEST_F(SafetensorsTest, EveryTruncationIsAnError) {
  const std::string good = sample().build();
  ASSERT_NO_THROW(SafetensorsFile::open(write(good)));
  for (size_t n = 0; n < good.size(); ++n) {
    SCOPED_TRACE(n);
    expect_error(good.substr(0, n));
  }
}

TEST_F(SafetensorsTest, RandomCorruptionNeverCrashes) {
  const std::string good = sample().build();
  std::mt19937 rng(99);
  const std::string path = (dir_ / "fuzz.safetensors").string();
  int errors = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    std::string bad = good;
    const int flips = 1 + int(rng() % 3);
    for (int f = 0; f < flips; ++f) {
      const size_t at = rng() % 2 == 0 ? rng() % 8 + 8 * (rng() % 2) : rng() % bad.size();
      bad[at] = char(rng());
    }
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bad.data(), bad.size());
    try {
      const SafetensorsFile f = SafetensorsFile::open(path);
      for (const auto& t : f.tensors()) f.raw(t);
    } catch (const Error& e) {
      ++errors;
      ASSERT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(errors, 100);
}

TEST_F(SafetensorsTest, CheckpointSingleFile) {
  write(sample().build(), "single/model.safetensors");
  const SafetensorsCheckpoint ck = SafetensorsCheckpoint::open_dir((dir_ / "single").string());
  EXPECT_EQ(ck.files().size(), 1u);
  EXPECT_EQ(ck.tensors().size(), 7u);
  EXPECT_EQ(ck.tensors().front().name, "bf16");  // sorted by name
  EXPECT_EQ(ck.read_f32("f32"), kValues);
  EXPECT_EQ(ck.at("f32").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ck.find("nope"), nullptr);
  EXPECT_THROW(ck.read_f32("nope"), Error);
  // A file path works too.
  const std::string file = (dir_ / "single/model.safetensors").string();
  EXPECT_EQ(SafetensorsCheckpoint::open_dir(file).read_f32("f32"), kValues);
}

TEST_F(SafetensorsTest, CheckpointShards) {
  const fs::path d = dir_ / "sharded";
  StBuilder s1, s2;
  s1.tensor("model.embed_tokens.weight", "F32", {2, 3}, as_bytes(kValues));
  s1.tensor("model.norm.weight", "F32", {2}, as_bytes(std::vector<float>{1, 2}));
  s2.tensor("lm_head.weight", "BF16", {1, 2},
            as_bytes(std::vector<uint16_t>{float_to_bf16(3.f), float_to_bf16(-4.f)}));
  write(s1.build(), "sharded/model-00001-of-00002.safetensors");
  write(s2.build(), "sharded/model-00002-of-00002.safetensors");
  json index = {{"metadata", {{"total_size", 36}}},
                {"weight_map",
                 {{"model.embed_tokens.weight", "model-00001-of-00002.safetensors"},
                  {"model.norm.weight", "model-00001-of-00002.safetensors"},
                  {"lm_head.weight", "model-00002-of-00002.safetensors"}}}};
  write(index.dump(), "sharded/model.safetensors.index.json");
  const SafetensorsCheckpoint ck = SafetensorsCheckpoint::open_dir(d.string());
  EXPECT_EQ(ck.files().size(), 2u);
  ASSERT_EQ(ck.tensors().size(), 3u);
  EXPECT_EQ(ck.read_f32("model.embed_tokens.weight"), kValues);
  EXPECT_EQ(ck.read_f32("lm_head.weight"), (std::vector<float>{3.f, -4.f}));
  EXPECT_EQ(ck.at("lm_head.weight").file, (d / "model-00002-of-00002.safetensors").string());
  EXPECT_EQ(ck.raw("model.norm.weight").size(), 8u);

  // A weight_map entry whose shard lacks the tensor.
  index["weight_map"]["ghost"] = "model-00002-of-00002.safetensors";
  write(index.dump(), "sharded/model.safetensors.index.json");
  expect_dir_error(d.string(), "ghost");
  // A missing shard file.
  index["weight_map"].erase("ghost");
  index["weight_map"]["x"] = "model-00003-of-00002.safetensors";
  write(index.dump(), "sharded/model.safetensors.index.json");
  expect_dir_error(d.string(), "model-00003-of-00002.safetensors");
  // A shard name escaping the folder.
  index["weight_map"]["x"] = "../evil.safetensors";
  write(index.dump(), "sharded/model.safetensors.index.json");
  expect_dir_error(d.string(), "invalid shard");
  // The same tensor in two shards.
  index["weight_map"].erase("x");
  write(index.dump(), "sharded/model.safetensors.index.json");
  s2.tensor("model.norm.weight", "F32", {2}, as_bytes(std::vector<float>{1, 2}));
  write(s2.build(), "sharded/model-00002-of-00002.safetensors");
  expect_dir_error(d.string(), "more than one shard");
  // An index that does not parse.
  write("{\"weight_map\": ", "sharded/model.safetensors.index.json");
  expect_dir_error(d.string(), "model.safetensors.index.json");
  write("{\"metadata\": {}}", "sharded/model.safetensors.index.json");
  expect_dir_error(d.string(), "weight_map");
}

TEST_F(SafetensorsTest, CheckpointMissing) {
  fs::create_directories(dir_ / "emptydir");
  expect_dir_error((dir_ / "emptydir").string(), "neither model.safetensors");
  expect_dir_error((dir_ / "nowhere").string(), "does not exist");
  write("garbage!", "broken/model.safetensors");
  expect_dir_error((dir_ / "broken").string(), (dir_ / "broken/model.safetensors").string());
}

}  // namespace
}  // namespace tessera
