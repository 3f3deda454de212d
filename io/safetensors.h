// Readers for safetensors files and Hugging Face checkpoint folders.
//
// Format: u64 little-endian N, then N bytes of JSON header, then the data buffer. The header maps
// each tensor name to {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} (offsets
// relative to the data buffer) plus an optional "__metadata__" object of string -> string.
// As the format requires, the tensors must tile the data buffer exactly: no overlap, no hole, no
// trailing bytes. open() checks all of that (and the header's size against the file's) before
// touching any tensor, and fails with a tessera::Error naming the file and the problem.
//
// Shapes are row-major, outermost first, exactly as in the header. The file is memory-mapped.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

class MappedFile;

// Bytes per element of a safetensors dtype ("F32" -> 4, "BF16" -> 2, "BOOL" -> 1, ...); 0 when
// the dtype is unknown.
size_t safetensors_dtype_size(std::string_view dtype);

struct SafetensorsTensorInfo {
  std::string name;
  std::string dtype;           // as in the header: "F32", "F16", "BF16", "I64", ...
  std::vector<int64_t> shape;  // row-major, outermost first; {} is a scalar
  uint64_t offset = 0;         // absolute byte offset in the file
  uint64_t nbytes = 0;
  std::string file;  // path of the file holding the data
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }  // file order
  const SafetensorsTensorInfo* find(std::string_view name) const;  // nullptr when absent
  const SafetensorsTensorInfo& at(std::string_view name) const;    // throws

  std::span<const uint8_t> raw(const SafetensorsTensorInfo& info) const;
  // Converts F32, F16, BF16 or F64 data to float32; other dtypes throw naming the tensor.
  std::vector<float> read_f32(const SafetensorsTensorInfo& info) const;
  void read_f32(const SafetensorsTensorInfo& info, float* dst) const;  // info.numel() floats

 private:
  std::string path_;
  std::shared_ptr<const MappedFile> file_;
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
};

// A Hugging Face checkpoint folder: either model.safetensors, or shards listed by
// model.safetensors.index.json ({"weight_map": {tensor name: shard file name}}). All tensors of
// all shards are merged into one table; a name in two shards, or a weight_map entry whose shard
// lacks the tensor, is an error. open_dir() also accepts the path of a single .safetensors file.
class SafetensorsCheckpoint {
 public:
  static SafetensorsCheckpoint open_dir(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const std::vector<SafetensorsFile>& files() const { return files_; }
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }  // by name
  const SafetensorsTensorInfo* find(std::string_view name) const;
  const SafetensorsTensorInfo& at(std::string_view name) const;  // throws naming dir and tensor

  std::span<const uint8_t> raw(std::string_view name) const;
  std::vector<float> read_f32(std::string_view name) const;
  void read_f32(std::string_view name, float* dst) const;

 private:
  const SafetensorsFile& file_of(std::string_view name, const SafetensorsTensorInfo** info) const;

  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::vector<size_t> file_index_;  // file_index_[i]: files_ entry holding tensors_[i]
  std::map<std::string, size_t, std::less<>> index_;
};

}  // namespace tessera
