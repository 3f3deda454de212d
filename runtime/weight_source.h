// Where a model's weights come from: a model file (FileWeights), or deterministic random numbers
// of the config's shapes (RandomWeights: benchmarks of models too big to write, and tests).
// LlamaModel asks a source for its rank's slice of each tensor, by canonical name
// (io/llama_tensors.h), already in its dtype and on its device.
#pragma once

#include <string>

#include "io/model_config.h"
#include "io/model_store.h"
#include "kernels/tensor.h"
#include "parallel/sharding.h"

namespace tessera {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const ModelConfig& config() const = 0;
  virtual bool has(const std::string& name) const = 0;
  // The type the named tensor is stored as (f32, f16, bf16 or a quantized format).
  virtual DType stored(const std::string& name) const = 0;
  // Rows `rows` x columns `cols` of the named tensor (all columns when cols is empty; a 1-d
  // tensor's elements `rows`), as dtype on device: as stored, or converted (dequantized). The
  // tensor must have the config's shape; a quantized one's columns must be whole blocks.
  virtual Tensor read(const std::string& name, Range rows, Range cols, DType dtype,
                      Device device) const = 0;
  // The whole tensor, as float32 on the host.
  virtual Tensor read_whole_f32(const std::string& name) const = 0;
};

// A weight's input order (io/model_store.h: `order_name`, in_features i32), checked to be a
// permutation of the features (throws naming the first that is not), on device.
Tensor read_input_order(const WeightSource& src, const std::string& order_name,
                        int64_t in_features, Device device);

// A row-parallel shard of a weight whose columns are stored in another order than its input
// features (`order_name` gives the feature each stored column reads: io/model_store.h's
// input_order, GPTQ act-order): the stored columns that read `features` (of `in_features`), as
// this rank keeps them, and the order they read the rank's local input (features.begin at 0) in.
// int4 groups (i4_g32, i4_g128) stay blocks: each stored block's columns that read the rank's
// features become i4_g32 blocks of their own, with the block's scale and zero point, padded to
// whole blocks with columns of weight 0 that read nothing (-1). Other formats are decoded and put
// back in feature order (input_order undefined). The whole stored weight is read (its columns
// for a feature range are scattered).
struct ReorderedShard {
  Tensor weight;       // (out_features, columns) of the resident type on device
  Tensor input_order;  // (columns) i32 on device, or undefined
};
ReorderedShard read_reordered_columns(const WeightSource& src, const std::string& name,
                                      const std::string& order_name, int64_t out_features,
                                      int64_t in_features, Range features, DType act,
                                      Device device);

// The weights of a model file: only each slice's hyperslab is read.
class FileWeights final : public WeightSource {
 public:
  explicit FileWeights(const ModelReader& reader);
  const ModelConfig& config() const override { return reader_.config(); }
  bool has(const std::string& name) const override { return reader_.has_weight(name); }
  DType stored(const std::string& name) const override { return reader_.weight_info(name).dtype; }
  Tensor read(const std::string& name, Range rows, Range cols, DType dtype,
              Device device) const override;
  Tensor read_whole_f32(const std::string& name) const override;

 private:
  Shape checked_shape(const std::string& name) const;  // throws unless the config's shape
  const ModelReader& reader_;
};

// Uniform random weights made where they live (ops::fill_uniform: the same numbers on every
// device and for every slicing): matrices with standard deviation 1/sqrt(in features), norm
// weights around 1, biases around 0. No optional tensor (rope_freqs) exists. With `matrices` a
// quantized format (kernels/quant.h), the matrices whose rows are whole blocks of it are stored
// so: random codes under scales of about that deviation, made on the host (a hash of each
// block's place: the same blocks for every slicing) and copied where they live.
class RandomWeights final : public WeightSource {
 public:
  RandomWeights(const ModelConfig& config, uint64_t seed, DType matrices = DType::kF32);
  const ModelConfig& config() const override { return config_; }
  bool has(const std::string& name) const override;
  DType stored(const std::string& name) const override;
  Tensor read(const std::string& name, Range rows, Range cols, DType dtype,
              Device device) const override;
  Tensor read_whole_f32(const std::string& name) const override;

 private:
  ModelConfig config_;
  uint64_t seed_;
  DType matrices_;
};

}  // namespace tessera
