#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "io/mapped_file.h"
#include "kernels/dtype.h"
#include "kernels/error.h"

namespace tessera {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the format's own limit
constexpr uint64_t kMaxIndexBytes = 256 << 20;

// Parses JSON text; throws naming `what` on a syntax error or a duplicated top-level key.
json parse_json(const char* begin, const char* end, const std::string& what) {
  std::set<std::string> keys;
  std::string duplicate;
  auto cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
      std::string k = parsed.get<std::string>();
      if (!keys.insert(k).second) duplicate = std::move(k);
    }
    return true;
  };
  json j;
  try {
    j = json::parse(begin, end, cb);
  } catch (const json::exception& e) {
    TESSERA_FAIL(what << ": header JSON does not parse: " << e.what());
  }
  TESSERA_CHECK(duplicate.empty(), what << ": key " << duplicate << " appears twice");
  return j;
}

}  // namespace

size_t safetensors_dtype_size(std::string_view dtype) {
  static const std::map<std::string_view, size_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"F64", 8}, {"I64", 8}, {"U64", 8},     {"C64", 8},
  };
  auto it = kSizes.find(dtype);
  return it == kSizes.end() ? 0 : it->second;
}

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.file_ = MappedFile::open(path);
  const uint64_t size = f.file_->size();
  const std::string where = "safetensors " + path;
  TESSERA_CHECK(size >= 8, where << ": file is truncated (" << size
                                 << " bytes, too short for the header size)");
  uint64_t header_len;
  std::memcpy(&header_len, f.file_->data(), 8);
  TESSERA_CHECK(header_len <= size - 8, where << ": file is truncated: the header claims "
                                              << header_len << " bytes but the file has only "
                                              << size << " bytes");
  TESSERA_CHECK(header_len <= kMaxHeaderBytes, where << ": header size " << header_len
                                                     << " exceeds the format's limit of "
                                                     << kMaxHeaderBytes << " bytes");
  TESSERA_CHECK(header_len >= 2 && f.file_->data()[8] == '{',
                where << ": header is not a JSON object (bad magic; not a safetensors file?)");
  const char* hbegin = reinterpret_cast<const char*>(f.file_->data() + 8);
  const json header = parse_json(hbegin, hbegin + header_len, where);
  TESSERA_CHECK(header.is_object(), where << ": header is not a JSON object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      TESSERA_CHECK(entry.is_object(), where << ": __metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        TESSERA_CHECK(v.is_string(),
                      where << ": __metadata__ value of " << k << " is not a string");
        f.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string tw = where + ": tensor " + name;
    TESSERA_CHECK(entry.is_object(), tw << ": entry is not an object");
    TESSERA_CHECK(entry.contains("dtype") && entry["dtype"].is_string(),
                  tw << ": missing or non-string dtype");
    TESSERA_CHECK(entry.contains("shape") && entry["shape"].is_array(),
                  tw << ": missing or non-array shape");
    TESSERA_CHECK(entry.contains("data_offsets") && entry["data_offsets"].is_array() &&
                      entry["data_offsets"].size() == 2 &&
                      entry["data_offsets"][0].is_number_unsigned() &&
                      entry["data_offsets"][1].is_number_unsigned(),
                  tw << ": data_offsets must be two non-negative integers");
    SafetensorsTensorInfo t;
    t.name = name;
    t.file = path;
    t.dtype = entry["dtype"].get<std::string>();
    const size_t esize = safetensors_dtype_size(t.dtype);
    TESSERA_CHECK(esize != 0, tw << ": unknown dtype " << t.dtype);
    uint64_t numel = 1;
    for (const json& d : entry["shape"]) {
      TESSERA_CHECK(d.is_number_unsigned(), tw << ": shape " << entry["shape"].dump()
                                               << " has a non-integer or negative dimension");
      const uint64_t v = d.get<uint64_t>();
      TESSERA_CHECK(v <= uint64_t(INT64_MAX) && !__builtin_mul_overflow(numel, v, &numel) &&
                        numel <= uint64_t(INT64_MAX),
                    tw << ": shape " << entry["shape"].dump() << " is absurdly large");
      t.shape.push_back(int64_t(v));
    }
    const uint64_t begin = entry["data_offsets"][0].get<uint64_t>();
    const uint64_t end = entry["data_offsets"][1].get<uint64_t>();
    TESSERA_CHECK(begin <= end,
                  tw << ": data_offsets [" << begin << ", " << end << "] end before they begin");
    TESSERA_CHECK(end <= data_size, tw << ": data [" << begin << ", " << end
                                       << ") runs past the end of the file (data section of "
                                       << data_size << " bytes); the file is truncated or corrupt");
    uint64_t want;
    TESSERA_CHECK(!__builtin_mul_overflow(numel, uint64_t(esize), &want) && want == end - begin,
                  tw << ": shape " << entry["shape"].dump() << " of " << t.dtype << " needs "
                     << numel << " x " << esize << " bytes but data_offsets span " << end - begin);
    t.offset = data_start + begin;
    t.nbytes = end - begin;
    f.tensors_.push_back(std::move(t));
  }

  // The tensors must tile the data buffer: sorted by offset, each starts where the last ended.
  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const auto& a, const auto& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.nbytes < b.nbytes;
  });
  uint64_t expect = data_start;
  const SafetensorsTensorInfo* prev = nullptr;
  for (const SafetensorsTensorInfo& t : f.tensors_) {
    TESSERA_CHECK(t.offset >= expect, where << ": data of tensors " << (prev ? prev->name : "")
                                            << " and " << t.name << " overlap");
    TESSERA_CHECK(t.offset == expect,
                  where << ": misaligned data offsets: tensor " << t.name << " starts at "
                        << t.offset - data_start << " but the previous tensor ends at "
                        << expect - data_start << " (the format allows no holes)");
    expect = t.offset + t.nbytes;
    prev = &t;
  }
  TESSERA_CHECK(expect == size, where << ": " << size - expect
                                      << " bytes after the last tensor's data are not "
                                         "described by the header");
  for (size_t i = 0; i < f.tensors_.size(); ++i) f.index_.emplace(f.tensors_[i].name, i);
  return f;
}

const SafetensorsTensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const SafetensorsTensorInfo& SafetensorsFile::at(std::string_view name) const {
  const SafetensorsTensorInfo* t = find(name);
  TESSERA_CHECK(t != nullptr, "safetensors " << path_ << ": no tensor named " << name);
  return *t;
}

std::span<const uint8_t> SafetensorsFile::raw(const SafetensorsTensorInfo& info) const {
  TESSERA_CHECK(info.offset <= file_->size() && info.nbytes <= file_->size() - info.offset,
                "safetensors " << path_ << ": tensor " << info.name << " lies outside the file");
  return {file_->data() + info.offset, size_t(info.nbytes)};
}

void SafetensorsFile::read_f32(const SafetensorsTensorInfo& info, float* dst) const {
  const std::span<const uint8_t> bytes = raw(info);
  const size_t esize = safetensors_dtype_size(info.dtype);
  const int64_t n = info.numel();
  TESSERA_CHECK(esize != 0 && uint64_t(n) * esize == info.nbytes,
                "safetensors " << path_ << ": tensor " << info.name
                               << " has a byte size that does not match its shape and dtype");
  const uint8_t* p = bytes.data();  // only byte-aligned in general: load through memcpy
  if (info.dtype == "F32") {
    if (n > 0) std::memcpy(dst, p, size_t(n) * 4);
  } else if (info.dtype == "F16" || info.dtype == "BF16") {
    const bool half = info.dtype == "F16";
    for (int64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      dst[i] = half ? half_to_float(v) : bf16_to_float(v);
    }
  } else if (info.dtype == "F64") {
    for (int64_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, p + 8 * i, 8);
      dst[i] = float(v);
    }
  } else {
    TESSERA_FAIL("safetensors " << path_ << ": tensor " << info.name << " has dtype " << info.dtype
                                << ", which cannot be read as float32 (supported: F32, F16, BF16, "
                                   "F64)");
  }
}

std::vector<float> SafetensorsFile::read_f32(const SafetensorsTensorInfo& info) const {
  std::vector<float> out(size_t(info.numel()));
  read_f32(info, out.data());
  return out;
}

SafetensorsCheckpoint SafetensorsCheckpoint::open_dir(const std::string& dir) {
  SafetensorsCheckpoint ck;
  ck.dir_ = dir;
  const fs::path root(dir);
  std::error_code ec;
  if (fs::is_regular_file(root, ec)) {
    ck.files_.push_back(SafetensorsFile::open(dir));
  } else {
    TESSERA_CHECK(fs::is_directory(root, ec), "checkpoint " << dir << " does not exist");
    const fs::path index_path = root / "model.safetensors.index.json";
    const fs::path single = root / "model.safetensors";
    if (fs::exists(index_path, ec)) {
      const std::string ip = index_path.string();
      const uint64_t isize = fs::file_size(index_path, ec);
      TESSERA_CHECK(!ec && isize <= kMaxIndexBytes, ip << ": cannot read or absurdly large");
      std::ifstream in(index_path, std::ios::binary);
      std::string text(size_t(isize), '\0');
      in.read(text.data(), std::streamsize(isize));
      TESSERA_CHECK(in.good() || in.eof(), ip << ": read failed");
      const json index = parse_json(text.data(), text.data() + text.size(), ip);
      TESSERA_CHECK(
          index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
          ip << ": no weight_map object");
      std::map<std::string, size_t> shard_of_file;
      std::vector<std::pair<std::string, size_t>> expected;  // tensor name, shard
      for (const auto& [name, shard] : index["weight_map"].items()) {
        TESSERA_CHECK(shard.is_string(),
                      ip << ": weight_map entry " << name << " is not a file name");
        const std::string file = shard.get<std::string>();
        TESSERA_CHECK(
            !file.empty() && file.find('/') == std::string::npos && file != "." && file != "..",
            ip << ": weight_map entry " << name << " names an invalid shard file " << file);
        auto [it, fresh] = shard_of_file.emplace(file, ck.files_.size());
        if (fresh) ck.files_.push_back(SafetensorsFile::open((root / file).string()));
        expected.emplace_back(name, it->second);
      }
      TESSERA_CHECK(!ck.files_.empty(), ip << ": weight_map is empty");
      for (const auto& [name, shard] : expected) {
        TESSERA_CHECK(ck.files_[shard].find(name) != nullptr,
                      ip << ": weight_map puts tensor " << name << " in " << ck.files_[shard].path()
                         << ", which has no such tensor");
      }
    } else {
      TESSERA_CHECK(fs::exists(single, ec), "checkpoint " << dir
                                                          << " has neither model.safetensors nor "
                                                             "model.safetensors.index.json");
      ck.files_.push_back(SafetensorsFile::open(single.string()));
    }
  }

  for (size_t fi = 0; fi < ck.files_.size(); ++fi) {
    for (const SafetensorsTensorInfo& t : ck.files_[fi].tensors()) {
      auto [it, fresh] = ck.index_.emplace(t.name, 0);
      TESSERA_CHECK(fresh, "checkpoint " << dir << ": tensor " << t.name
                                         << " appears in more than one shard (also in "
                                         << ck.files_[fi].path() << ")");
    }
  }
  std::vector<std::pair<const SafetensorsTensorInfo*, size_t>> all;
  for (size_t fi = 0; fi < ck.files_.size(); ++fi) {
    for (const SafetensorsTensorInfo& t : ck.files_[fi].tensors()) all.emplace_back(&t, fi);
  }
  std::sort(all.begin(), all.end(),
            [](const auto& a, const auto& b) { return a.first->name < b.first->name; });
  for (size_t i = 0; i < all.size(); ++i) {
    ck.tensors_.push_back(*all[i].first);
    ck.file_index_.push_back(all[i].second);
    ck.index_[all[i].first->name] = i;
  }
  return ck;
}

const SafetensorsTensorInfo* SafetensorsCheckpoint::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const SafetensorsTensorInfo& SafetensorsCheckpoint::at(std::string_view name) const {
  const SafetensorsTensorInfo* t = find(name);
  TESSERA_CHECK(t != nullptr, "checkpoint " << dir_ << ": no tensor named " << name);
  return *t;
}

const SafetensorsFile& SafetensorsCheckpoint::file_of(std::string_view name,
                                                      const SafetensorsTensorInfo** info) const {
  *info = &at(name);
  return files_[file_index_[size_t(*info - tensors_.data())]];
}

std::span<const uint8_t> SafetensorsCheckpoint::raw(std::string_view name) const {
  const SafetensorsTensorInfo* info;
  const SafetensorsFile& f = file_of(name, &info);
  return f.raw(*info);
}

std::vector<float> SafetensorsCheckpoint::read_f32(std::string_view name) const {
  const SafetensorsTensorInfo* info;
  const SafetensorsFile& f = file_of(name, &info);
  return f.read_f32(*info);
}

void SafetensorsCheckpoint::read_f32(std::string_view name, float* dst) const {
  const SafetensorsTensorInfo* info;
  const SafetensorsFile& f = file_of(name, &info);
  f.read_f32(*info, dst);
}

}  // namespace tessera
