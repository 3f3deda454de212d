#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <numeric>

#include "io/mapped_file.h"
#include "kernels/error.h"

namespace tessera {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 4;

// Bytes of a scalar value; 0 for string and array.
uint64_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64:
      return 8;
    case GgufValueType::kString:
    case GgufValueType::kArray:
      return 0;
  }
  return 0;
}

// Smallest number of bytes one value of type t can take (used to bound counts).
uint64_t min_value_size(GgufValueType t) {
  if (t == GgufValueType::kString) return 8;     // u64 length
  if (t == GgufValueType::kArray) return 4 + 8;  // element type + count
  return scalar_size(t);
}

bool valid_value_type(uint32_t t) {
  return t <= uint32_t(GgufValueType::kF64);
}

// Bounds-checked little-endian cursor over the mapped file.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, uint64_t size)
      : path_(path), data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, std::string_view what) const {
    TESSERA_CHECK(n <= remaining(), "GGUF " << path_ << ": file is truncated: " << what << " needs "
                                            << n << " bytes at offset " << pos_
                                            << " but the file has " << size_ << " bytes");
  }

  template <class T>
  T get(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string str(std::string_view what) {
    const uint64_t len = get<uint64_t>(what);
    need(len, what);  // bounds the allocation by the file size
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

nlohmann::json read_value(Cursor& c, const std::string& path, GgufValueType type,
                          const std::string& key, int depth) {
  switch (type) {
    case GgufValueType::kU8:
      return c.get<uint8_t>(key);
    case GgufValueType::kI8:
      return c.get<int8_t>(key);
    case GgufValueType::kU16:
      return c.get<uint16_t>(key);
    case GgufValueType::kI16:
      return c.get<int16_t>(key);
    case GgufValueType::kU32:
      return c.get<uint32_t>(key);
    case GgufValueType::kI32:
      return c.get<int32_t>(key);
    case GgufValueType::kF32:
      return double(c.get<float>(key));
    case GgufValueType::kBool:
      return c.get<uint8_t>(key) != 0;
    case GgufValueType::kString:
      return c.str(key);
    case GgufValueType::kU64:
      return c.get<uint64_t>(key);
    case GgufValueType::kI64:
      return c.get<int64_t>(key);
    case GgufValueType::kF64:
      return c.get<double>(key);
    case GgufValueType::kArray: {
      TESSERA_CHECK(depth < kMaxArrayDepth, "GGUF " << path << ": metadata " << key
                                                    << " nests arrays deeper than "
                                                    << kMaxArrayDepth);
      const uint32_t et = c.get<uint32_t>(key);
      TESSERA_CHECK(valid_value_type(et), "GGUF " << path << ": metadata " << key
                                                  << " is an array of unknown value type " << et);
      const uint64_t count = c.get<uint64_t>(key);
      const uint64_t min_size = min_value_size(GgufValueType(et));
      TESSERA_CHECK(count <= c.remaining() / min_size,
                    "GGUF " << path << ": metadata " << key << " claims " << count
                            << " array elements, more than the " << c.remaining()
                            << " bytes left in the file can hold");
      nlohmann::json arr = nlohmann::json::array();
      arr.get_ref<nlohmann::json::array_t&>().reserve(size_t(count));
      for (uint64_t i = 0; i < count; ++i) {
        arr.push_back(read_value(c, path, GgufValueType(et), key, depth + 1));
      }
      return arr;
    }
  }
  TESSERA_FAIL("GGUF " << path << ": metadata " << key << " has unknown value type "
                       << uint32_t(type));
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
      return "u8";
    case GgufValueType::kI8:
      return "i8";
    case GgufValueType::kU16:
      return "u16";
    case GgufValueType::kI16:
      return "i16";
    case GgufValueType::kU32:
      return "u32";
    case GgufValueType::kI32:
      return "i32";
    case GgufValueType::kF32:
      return "f32";
    case GgufValueType::kBool:
      return "bool";
    case GgufValueType::kString:
      return "string";
    case GgufValueType::kArray:
      return "array";
    case GgufValueType::kU64:
      return "u64";
    case GgufValueType::kI64:
      return "i64";
    case GgufValueType::kF64:
      return "f64";
  }
  return "unknown";
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

GgufFile GgufFile::open(const std::string& path) {
  GgufFile g;
  g.path_ = path;
  g.file_ = MappedFile::open(path);
  const uint64_t file_size = g.file_->size();
  Cursor c(path, g.file_->data(), file_size);

  const uint32_t magic = c.get<uint32_t>("the magic");
  TESSERA_CHECK(magic == kMagic, "GGUF " << path << ": bad magic (not a GGUF file)");
  g.version_ = c.get<uint32_t>("the version");
  if (g.version_ != 2 && g.version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(g.version_);
    TESSERA_CHECK(swapped != 2 && swapped != 3,
                  "GGUF " << path << ": big-endian GGUF files are not supported");
    TESSERA_FAIL("GGUF " << path << ": unsupported GGUF version " << g.version_
                         << " (supported: 2, 3)");
  }
  const uint64_t n_tensors = c.get<uint64_t>("the tensor count");
  const uint64_t n_kv = c.get<uint64_t>("the metadata count");
  // Each key/value takes at least 13 bytes, each tensor info at least 32.
  TESSERA_CHECK(n_kv <= c.remaining() / 13, "GGUF " << path << ": metadata count " << n_kv
                                                    << " is impossible for a file of " << file_size
                                                    << " bytes");
  TESSERA_CHECK(n_tensors <= c.remaining() / 32, "GGUF " << path << ": tensor count " << n_tensors
                                                         << " is impossible for a file of "
                                                         << file_size << " bytes");

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.str("a metadata key");
    const uint32_t vt = c.get<uint32_t>(key);
    TESSERA_CHECK(valid_value_type(vt),
                  "GGUF " << path << ": metadata " << key << " has unknown value type " << vt);
    TESSERA_CHECK(!g.metadata_.contains(key),
                  "GGUF " << path << ": metadata key " << key << " appears twice");
    const uint64_t start = c.pos();
    nlohmann::json value = read_value(c, path, GgufValueType(vt), key, 0);
    GgufKeyType kt{GgufValueType(vt), GgufValueType(vt)};
    if (kt.type == GgufValueType::kArray) {
      uint32_t et;  // re-read the element type written right after the value type
      std::memcpy(&et, g.file_->data() + start, 4);
      kt.elem_type = GgufValueType(et);
    }
    g.types_.emplace(key, kt);
    g.metadata_[key] = std::move(value);
  }

  if (auto it = g.types_.find("general.alignment"); it != g.types_.end()) {
    const GgufValueType t = it->second.type;
    TESSERA_CHECK(t == GgufValueType::kU32 || t == GgufValueType::kU64 ||
                      t == GgufValueType::kI32 || t == GgufValueType::kU16,
                  "GGUF " << path << ": general.alignment has type " << gguf_value_type_name(t)
                          << ", expected u32");
    const nlohmann::json& a = g.metadata_["general.alignment"];
    const int64_t v = a.get<int64_t>();
    TESSERA_CHECK(v > 0 && v <= (1 << 30) && std::has_single_bit(uint64_t(v)),
                  "GGUF " << path << ": general.alignment " << v << " is not a power of two");
    g.alignment_ = uint64_t(v);
  }

  g.tensors_.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.str("a tensor name");
    const std::string& name = t.name;
    const uint32_t n_dims = c.get<uint32_t>("tensor " + name);
    TESSERA_CHECK(n_dims >= 1 && n_dims <= kMaxDims,
                  "GGUF " << path << ": tensor " << name << " has " << n_dims
                          << " dimensions (expected 1 to " << kMaxDims << ")");
    std::vector<int64_t> ne(n_dims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t v = c.get<uint64_t>("tensor " + name);
      TESSERA_CHECK(v <= uint64_t(std::numeric_limits<int64_t>::max()) &&
                        !mul_overflows(numel, v, &numel) &&
                        numel <= uint64_t(std::numeric_limits<int64_t>::max()),
                    "GGUF " << path << ": tensor " << name << " has an absurd dimension " << v);
      ne[d] = int64_t(v);
    }
    t.shape.assign(ne.rbegin(), ne.rend());
    t.ggml_type = c.get<uint32_t>("tensor " + name);
    const GgmlTypeTraits* traits = ggml_type_traits(t.ggml_type);
    TESSERA_CHECK(traits != nullptr, "GGUF " << path << ": tensor " << name
                                             << " has unknown GGML type id " << t.ggml_type);
    TESSERA_CHECK(ne[0] % traits->block_size == 0,
                  "GGUF " << path << ": tensor " << name << " has rows of " << ne[0]
                          << " elements, not a multiple of the " << traits->name << " block size "
                          << traits->block_size);
    TESSERA_CHECK(!mul_overflows(numel / uint64_t(traits->block_size), uint64_t(traits->type_size),
                                 &t.nbytes),
                  "GGUF " << path << ": tensor " << name << " is absurdly large");
    t.offset = c.get<uint64_t>("tensor " + name);  // relative for now
    TESSERA_CHECK(g.index_.emplace(name, g.tensors_.size()).second,
                  "GGUF " << path << ": tensor " << name << " appears twice");
    g.tensors_.push_back(std::move(t));
  }

  g.data_offset_ = (c.pos() + g.alignment_ - 1) / g.alignment_ * g.alignment_;
  for (GgufTensorInfo& t : g.tensors_) {
    TESSERA_CHECK(t.offset % g.alignment_ == 0,
                  "GGUF " << path << ": tensor " << t.name << " has data offset " << t.offset
                          << ", not a multiple of the alignment " << g.alignment_);
    const uint64_t data_size = file_size >= g.data_offset_ ? file_size - g.data_offset_ : 0;
    TESSERA_CHECK(t.offset <= data_size && t.nbytes <= data_size - t.offset,
                  "GGUF " << path << ": data of tensor " << t.name << " (" << t.nbytes
                          << " bytes at offset " << t.offset << " of the data section at "
                          << g.data_offset_ << ") runs past the end of the file (" << file_size
                          << " bytes); the file is truncated or corrupt");
    t.offset += g.data_offset_;
  }
  std::vector<size_t> order(g.tensors_.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return g.tensors_[a].offset < g.tensors_[b].offset; });
  for (size_t i = 1; i < order.size(); ++i) {
    const GgufTensorInfo& prev = g.tensors_[order[i - 1]];
    const GgufTensorInfo& cur = g.tensors_[order[i]];
    TESSERA_CHECK(
        prev.nbytes == 0 || cur.offset >= prev.offset + prev.nbytes,
        "GGUF " << path << ": data of tensors " << prev.name << " and " << cur.name << " overlap");
  }
  return g;
}

std::optional<GgufKeyType> GgufFile::metadata_type(std::string_view key) const {
  auto it = types_.find(key);
  if (it == types_.end()) return std::nullopt;
  return it->second;
}

const GgufTensorInfo* GgufFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::at(std::string_view name) const {
  const GgufTensorInfo* t = find(name);
  TESSERA_CHECK(t != nullptr, "GGUF " << path_ << ": no tensor named " << name);
  return *t;
}

std::span<const uint8_t> GgufFile::raw(const GgufTensorInfo& info) const {
  TESSERA_CHECK(info.offset <= file_->size() && info.nbytes <= file_->size() - info.offset,
                "GGUF " << path_ << ": tensor " << info.name << " lies outside the file");
  return {file_->data() + info.offset, size_t(info.nbytes)};
}

void GgufFile::read_f32(const GgufTensorInfo& info, float* dst) const {
  TESSERA_CHECK(ggml_can_dequantize(info.ggml_type),
                "GGUF " << path_ << ": tensor " << info.name << " has type "
                        << ggml_type_name(info.ggml_type)
                        << ", which tessera cannot read (it reads " << ggml_readable_types()
                        << ")");
  const GgmlTypeTraits* tr = ggml_type_traits(info.ggml_type);
  const int64_t n = info.numel();
  TESSERA_CHECK(n >= 0 && n % tr->block_size == 0 &&
                    uint64_t(n / tr->block_size) * uint64_t(tr->type_size) == info.nbytes,
                "GGUF " << path_ << ": tensor " << info.name << " has " << info.nbytes
                        << " bytes, which does not match its shape");
  const std::span<const uint8_t> bytes = raw(info);
  ggml_dequantize(info.ggml_type, bytes.data(), dst, info.numel());
}

std::vector<float> GgufFile::read_f32(const GgufTensorInfo& info) const {
  std::vector<float> out(size_t(info.numel()));
  read_f32(info, out.data());
  return out;
}

}  // namespace tessera
