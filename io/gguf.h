// Reader for GGUF files (versions 2 and 3, little endian).
//
// Layout: "GGUF" magic, u32 version, u64 tensor count, u64 metadata count, the metadata
// key/value pairs, the tensor infos, padding to the alignment (metadata general.alignment,
// default 32), then the tensor data; each tensor info's offset is relative to that data start and
// a multiple of the alignment.
//
// The file is memory-mapped; open() parses the header and tensor infos and checks every count,
// length and offset against the file size before allocating anything, so a truncated or corrupt
// file gives a tessera::Error naming the file and the problem. Tensor data are only touched by
// raw() / read_f32().
//
// Metadata is exposed as a JSON object: integers stay integers (u64 unsigned, others signed or
// unsigned as stored), f32/f64 become numbers, bool, string, and arrays (also of strings, also
// nested) become JSON arrays. metadata_type() tells the exact GGUF type when it matters.
// Strings keep their bytes as stored (GGUF promises UTF-8 but a broken file may not be): dump
// metadata with nlohmann::json::error_handler_t::replace when that matters.
//
// Shapes: GGUF lists the dimensions fastest-varying first (ne[0] is the row length). tessera
// exposes them row-major, outermost first, i.e. reversed: a GGUF matrix with ne = {in, out} has
// shape {out, in}, and read_f32() returns its out * in floats in row-major order.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/ggml_quant.h"

namespace tessera {

class MappedFile;

enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
std::string_view gguf_value_type_name(GgufValueType t);  // "u32", "string", "array", ...

struct GgufKeyType {
  GgufValueType type;
  GgufValueType elem_type;  // for arrays: the element type; otherwise equal to type
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // row-major, outermost first (GGUF's ne[] reversed)
  uint32_t ggml_type = 0;      // GgmlType id; see ggml_type_name()
  uint64_t offset = 0;         // absolute byte offset of the data in the file
  uint64_t nbytes = 0;
  int64_t numel() const;
};

class GgufFile {
 public:
  // Throws tessera::Error naming the path on any problem with the file.
  static GgufFile open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // absolute start of the data section

  const nlohmann::json& metadata() const { return metadata_; }
  std::optional<GgufKeyType> metadata_type(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find(std::string_view name) const;  // nullptr when absent
  const GgufTensorInfo& at(std::string_view name) const;    // throws naming file and tensor

  // The tensor's bytes as stored (valid while this GgufFile or a copy of it lives).
  std::span<const uint8_t> raw(const GgufTensorInfo& info) const;
  // Dequantizes to float32, row-major. Throws naming the tensor and its type for types that
  // cannot be dequantized (see ggml_can_dequantize).
  std::vector<float> read_f32(const GgufTensorInfo& info) const;
  void read_f32(const GgufTensorInfo& info, float* dst) const;  // dst holds info.numel() floats

  static std::string type_name(uint32_t ggml_type) { return ggml_type_name(ggml_type); }

 private:
  std::string path_;
  std::shared_ptr<const MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  nlohmann::json metadata_ = nlohmann::json::object();
  std::map<std::string, GgufKeyType, std::less<>> types_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
};

}  // namespace tessera
