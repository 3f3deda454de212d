#include "runtime/weight_source.h"

#include <cmath>
#include <cstring>
#include <algorithm>
#include <map>
#include <vector>

#include "io/llama_tensors.h"
#include "kernels/ops.h"

namespace tessera {
namespace {

// The shapes the config implies, by name.
std::map<std::string, Shape> expected_shapes(const ModelConfig& c) {
  std::map<std::string, Shape> shapes;
  for (const TensorSpec& spec : llama_tensor_specs(c))
    if (spec.required) shapes[spec.name] = spec.shape;
  return shapes;
}

Tensor placed(Tensor t, DType dtype, Device device) {
  if (t.dtype() != dtype) {
    Tensor converted = Tensor::empty(t.shape(), dtype);
    ops::convert(t, converted);
    t = converted;
  }
  return device.is_cpu() ? t : t.to(device);
}

uint64_t name_hash(const std::string& name) {  // FNV-1a
  uint64_t h = 1469598103934665603ull;
  for (const char ch : name) h = (h ^ uint64_t(uint8_t(ch))) * 1099511628211ull;
  return h;
}

}  // namespace

FileWeights::FileWeights(const ModelReader& reader) : reader_(reader) {}

Shape FileWeights::checked_shape(const std::string& name) const {
  const ModelConfig& c = reader_.config();
  Shape want;
  for (const TensorSpec& spec : llama_tensor_specs(c))
    if (spec.name == name) want = spec.shape;
  const WeightInfo info = reader_.weight_info(name);
  TESSERA_CHECK(info.shape == want, reader_.path() << ": weight " << name << " has shape "
                                                   << shape_str(info.shape)
                                                   << ", the config implies " << shape_str(want));
  return info.shape;
}

Tensor FileWeights::read(const std::string& name, Range rows, Range cols, DType dtype,
                         Device device) const {
  const Shape sh = checked_shape(name);
  if (sh.size() == 1) cols = Range{0, 0};
  if (sh.size() == 2 && cols.size() == 0) cols = Range{0, sh[1]};
  const auto as = dtype == stored(name) ? ModelReader::As::kStored : ModelReader::As::kFloat32;
  return placed(reader_.read_weight_slice(name, rows.begin, rows.end, cols.begin, cols.end, as),
                dtype, device);
}

Tensor FileWeights::read_whole_f32(const std::string& name) const {
  checked_shape(name);
  return reader_.read_weight(name);
}

Tensor read_input_order(const WeightSource& src, const std::string& order_name,
                        int64_t in_features, Device device) {
  const Tensor order =
      src.read(order_name, Range{0, in_features}, Range{}, DType::kI32, Device::cpu());
  const int32_t* o = order.data<int32_t>();
  std::vector<bool> seen(size_t(in_features), false);
  for (int64_t j = 0; j < in_features; ++j) {
    TESSERA_CHECK(o[j] >= 0 && o[j] < in_features && !seen[size_t(o[j])],
                  order_name << ": column " << j << " reads feature " << o[j]
                             << ", which is not a feature of " << in_features
                             << " that no other column reads");
    seen[size_t(o[j])] = true;
  }
  return device.is_cpu() ? order : order.to(device);
}

ReorderedShard read_reordered_columns(const WeightSource& src, const std::string& name,
                                      const std::string& order_name, int64_t out_features,
                                      int64_t in_features, Range features, DType act,
                                      Device device) {
  const Tensor order = read_input_order(src, order_name, in_features, Device::cpu());
  const int32_t* o = order.data<int32_t>();
  const auto ours = [&](int64_t j) { return o[j] >= features.begin && o[j] < features.end; };
  const DType stored = src.stored(name);
  ReorderedShard shard;
  if (stored != DType::kI4G32 && stored != DType::kI4G128) {  // decoded, in feature order
    const Tensor w = src.read(name, Range{0, out_features}, Range{}, DType::kF32, Device::cpu());
    Tensor out = Tensor::empty({out_features, features.size()}, DType::kF32);
    for (int64_t j = 0; j < in_features; ++j)
      if (ours(j))
        for (int64_t r = 0; r < out_features; ++r)
          out.data<float>()[r * features.size() + (o[j] - features.begin)] =
              w.data<float>()[r * in_features + j];
    shard.weight = placed(out, ops::resident_weight_dtype(device, DType::kF32, act), device);
    return shard;
  }
  const Tensor w = src.read(name, Range{0, out_features}, Range{}, stored, Device::cpu());
  const int64_t block = dtype_block_elements(stored);
  const size_t block_bytes = dtype_block_bytes(stored), row_bytes = dtype_bytes(stored, in_features);
  // The stored column each new column takes (-1: padding), and the stored block of each new chunk.
  std::vector<int32_t> columns, local;
  std::vector<int64_t> chunk_block;
  for (int64_t b = 0; b < in_features / block; ++b) {
    for (int64_t j = b * block; j < (b + 1) * block; ++j)
      if (ours(j)) {
        columns.push_back(int32_t(j));
        local.push_back(int32_t(o[j] - features.begin));
      }
    while (columns.size() % 32 != 0) {
      columns.push_back(-1);
      local.push_back(-1);
    }
    chunk_block.resize(columns.size() / 32, b);
  }
  const int64_t n = int64_t(columns.size());
  Tensor out = Tensor::empty({out_features, n}, DType::kI4G32);
  const auto* from = static_cast<const uint8_t*>(w.raw());
  auto* to = static_cast<uint8_t*>(out.raw());
  const size_t out_row_bytes = dtype_bytes(DType::kI4G32, n);
  for (int64_t r = 0; r < out_features; ++r)
    for (int64_t c = 0; c < n / 32; ++c) {
      const uint8_t* src_block = from + size_t(r) * row_bytes + size_t(chunk_block[c]) * block_bytes;
      uint8_t* dst = to + size_t(r) * out_row_bytes + size_t(c) * 20;
      std::memcpy(dst, src_block, 4);  // the f16 scale, the zero point, 0
      int q[32];
      for (int i = 0; i < 32; ++i) {
        const int32_t j = columns[size_t(32 * c + i)];
        if (j < 0) {  // (its input is 0: gather_columns writes 0 for a column reading -1)
          q[i] = std::min<int>(src_block[2], 15);  // the zero point, weight 0 (or -d for 16)
          continue;
        }
        const int64_t e = j % block;  // element e of its block: chunk e / 32, as q4_0 there
        const uint8_t byte = src_block[4 + 16 * (e / 32) + (e % 32) % 16];
        q[i] = (e % 32) < 16 ? byte & 15 : byte >> 4;
      }
      for (int i = 0; i < 16; ++i) dst[4 + i] = uint8_t(q[i] | q[i + 16] << 4);
    }
  const DType resident = ops::resident_weight_dtype(device, DType::kI4G32, act);
  if (resident == DType::kI4G32) {
    shard.weight = device.is_cpu() ? out : out.to(device);
  } else {
    Tensor decoded = Tensor::empty(out.shape(), DType::kF32);
    convert_to_f32(DType::kI4G32, out.raw(), decoded.data<float>(), size_t(decoded.numel()));
    shard.weight = placed(decoded, resident, device);
  }
  shard.input_order = placed(Tensor::from_i32(local, {n}), DType::kI32, device);
  return shard;
}

RandomWeights::RandomWeights(const ModelConfig& config, uint64_t seed, DType matrices)
    : config_(config), seed_(seed), matrices_(matrices) {}

DType RandomWeights::stored(const std::string& name) const {
  const std::map<std::string, Shape> shapes = expected_shapes(config_);
  const auto it = shapes.find(name);
  const bool blocks = dtype_is_quantized(matrices_) && it != shapes.end() &&
                      it->second.size() == 2 && it->second[1] % dtype_block_elements(matrices_) == 0;
  return blocks ? matrices_ : DType::kF32;
}

namespace {

// Random blocks of `type` for rows x cols of a (.., in) matrix: codes from a hash of each block's
// place, scales giving values of about standard deviation 1/sqrt(in).
Tensor random_blocks(DType type, Range rows, Range cols, int64_t in, uint64_t seed) {
  const int64_t per = dtype_block_elements(type);
  const size_t bytes = dtype_block_bytes(type);
  Tensor t = Tensor::empty({rows.size(), cols.size()}, type);
  auto* p = static_cast<uint8_t*>(t.raw());
  const float sd = 1.0f / std::sqrt(float(in));
  for (int64_t r = rows.begin; r < rows.end; ++r)
    for (int64_t b = cols.begin / per; b < cols.end / per; ++b, p += bytes) {
      uint64_t h = seed ^ (uint64_t(r) * 0x9e3779b97f4a7c15ull) ^ (uint64_t(b) << 32);
      for (size_t i = 0; i < bytes; ++i) {  // splitmix64, a byte at a time
        if (i % 8 == 0) {
          h += 0x9e3779b97f4a7c15ull;
          uint64_t z = h;
          z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
          z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
          h = z ^ (z >> 31);
        }
        p[i] = uint8_t(h >> (8 * (i % 8)));
      }
      switch (type) {  // the scale fields (uniform codes: a standard deviation of about sd)
        case DType::kI4G32:
        case DType::kI4G128: {
          const uint16_t d = float_to_half(sd / 4.6f);  // codes - 8: deviation 4.6
          std::memcpy(p, &d, 2);
          p[2] = 8, p[3] = 0;
          break;
        }
        case DType::kF8E4M3: {
          const float d = sd / 64.0f;  // random e4m3 bytes have a deviation of about 64
          std::memcpy(p, &d, 4);
          for (size_t i = 4; i < bytes; ++i)
            if ((p[i] & 0x7f) == 0x7f) p[i] = 0;  // (no NaN)
          break;
        }
        default: {  // the GGML formats: d first, f16; q8_0's codes have a deviation of 74
          const uint16_t d = float_to_half(sd / 74.0f);
          std::memcpy(p, &d, 2);
          if (type == DType::kQ4_1 || type == DType::kQ5_1) std::memset(p + 2, 0, 2);
          TESSERA_CHECK(type == DType::kQ8_0 || type == DType::kQ4_0 || type == DType::kQ4_1 ||
                            type == DType::kQ5_0 || type == DType::kQ5_1,
                        "random weights in " << dtype_name(type) << " are not made");
        }
      }
    }
  return t;
}

}  // namespace

bool RandomWeights::has(const std::string& name) const {
  return expected_shapes(config_).count(name) > 0;
}

Tensor RandomWeights::read(const std::string& name, Range rows, Range cols, DType dtype,
                           Device device) const {
  const std::map<std::string, Shape> shapes = expected_shapes(config_);
  const auto it = shapes.find(name);
  TESSERA_ASSERT(it != shapes.end(), "a random model has no tensor " << name);
  const Shape& sh = it->second;
  const uint64_t seed = seed_ ^ name_hash(name);
  if (dtype_is_quantized(dtype)) {
    TESSERA_CHECK(dtype == stored(name), "a random model's " << name << " is "
                                                              << dtype_name(stored(name)) << ", not "
                                                              << dtype_name(dtype));
    if (cols.size() == 0) cols = Range{0, sh[1]};
    const Tensor blocks = random_blocks(dtype, rows, cols, sh[1], seed);
    return device.is_cpu() ? blocks : blocks.to(device);
  }
  if (sh.size() == 1) {  // norms around 1, biases around 0
    Tensor t = Tensor::empty({rows.size()}, dtype, device);
    const bool norm = name.find("norm") != std::string::npos;
    ops::fill_uniform(t, sh[0], 0, rows.begin, seed, norm ? 1.0f : 0.0f, norm ? 0.2f : 0.1f);
    return t;
  }
  if (cols.size() == 0) cols = Range{0, sh[1]};
  Tensor t = Tensor::empty({rows.size(), cols.size()}, dtype, device);
  // Uniform on [-a, a] has standard deviation a / sqrt(3).
  ops::fill_uniform(t, sh[1], rows.begin, cols.begin, seed, 0.0f,
                    std::sqrt(3.0f) / std::sqrt(float(sh[1])));
  return t;
}

Tensor RandomWeights::read_whole_f32(const std::string& name) const {
  const Shape sh = expected_shapes(config_).at(name);
  return read(name, Range{0, sh[0]}, Range{}, DType::kF32, Device::cpu());
}

}  // namespace tessera
