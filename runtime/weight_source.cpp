#include "runtime/weight_source.h"

#include <cmath>
#include <map>

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

RandomWeights::RandomWeights(const ModelConfig& config, uint64_t seed)
    : config_(config), seed_(seed) {}

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
