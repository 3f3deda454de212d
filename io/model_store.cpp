// HDF5 model file, written and read with the HDF5 C API (serial library; each rank opens the file
// read-only and reads its own hyperslabs).
#include "io/model_store.h"

#include <hdf5.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <utility>

#include "kernels/quant.h"

namespace tessera {
namespace {

// HDF5 prints its own error stack by default; tessera reports one line instead.
void silence_hdf5() {
  static bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

// Closes an HDF5 handle when it goes out of scope.
class H5Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Handle() = default;
  H5Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  H5Handle(H5Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = -1; }
  H5Handle& operator=(H5Handle&& o) noexcept {
    std::swap(id_, o.id_);
    std::swap(closer_, o.closer_);
    return *this;
  }
  H5Handle(const H5Handle&) = delete;
  ~H5Handle() {
    if (id_ >= 0 && closer_) closer_(id_);
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }
  // Gives up ownership: the caller closes the handle (and can check that closing worked).
  hid_t release() { return std::exchange(id_, -1); }

 private:
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

hid_t native_type(DType dt) {
  switch (dt) {
    case DType::kF32: return H5T_NATIVE_FLOAT;
    case DType::kF16:
    case DType::kBF16: return H5T_NATIVE_UINT16;
    case DType::kI32: return H5T_NATIVE_INT32;
    case DType::kI64: return H5T_NATIVE_INT64;
    case DType::kU8: return H5T_NATIVE_UINT8;
    default: return H5T_NATIVE_UINT8;  // the quantized formats: rows of blocks as bytes
  }
}

// ---- attributes ----------------------------------------------------------------------------

void set_attr_string(hid_t obj, const char* name, const std::string& value) {
  H5Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), std::max<size_t>(value.size(), 1));
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  H5Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Handle attr(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                H5Aclose);
  TESSERA_CHECK(attr.ok(), "cannot create attribute " << name);
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  TESSERA_CHECK(H5Awrite(attr.get(), type.get(), padded.data()) >= 0,
                "cannot write attribute " << name);
}

template <typename T>
void set_attr_num(hid_t obj, const char* name, T value) {
  hid_t t = std::is_same_v<T, double> ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64;
  H5Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Handle attr(H5Acreate2(obj, name, t, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  TESSERA_CHECK(attr.ok() && H5Awrite(attr.get(), t, &value) >= 0,
                "cannot write attribute " << name);
}

void set_attr_ints(hid_t obj, const char* name, const std::vector<int64_t>& values) {
  const hsize_t n = values.size();
  H5Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  H5Handle attr(H5Acreate2(obj, name, H5T_NATIVE_INT64, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                H5Aclose);
  TESSERA_CHECK(attr.ok() && H5Awrite(attr.get(), H5T_NATIVE_INT64, values.data()) >= 0,
                "cannot write attribute " << name);
}

bool has_attr(hid_t obj, const char* name) { return H5Aexists(obj, name) > 0; }

std::string get_attr_string(hid_t obj, const char* name, const std::string& where) {
  TESSERA_CHECK(has_attr(obj, name), where << ": attribute '" << name << "' is missing");
  H5Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  H5Handle ftype(H5Aget_type(attr.get()), H5Tclose);
  TESSERA_CHECK(H5Tget_class(ftype.get()) == H5T_STRING,
                where << ": attribute '" << name << "' is not a string");
  TESSERA_CHECK(H5Tis_variable_str(ftype.get()) <= 0,
                where << ": attribute '" << name << "' is a variable-length string");
  const size_t size = H5Tget_size(ftype.get());
  std::string out(size, '\0');
  H5Handle mtype(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(mtype.get(), size);
  H5Tset_strpad(mtype.get(), H5T_STR_NULLPAD);
  TESSERA_CHECK(H5Aread(attr.get(), mtype.get(), out.data()) >= 0,
                where << ": cannot read attribute '" << name << "'");
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::vector<int64_t> get_attr_ints(hid_t obj, const char* name, const std::string& where) {
  TESSERA_CHECK(has_attr(obj, name), where << ": attribute '" << name << "' is missing");
  H5Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  H5Handle space(H5Aget_space(attr.get()), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  TESSERA_CHECK(n >= 0 && n <= 8, where << ": attribute '" << name << "' has " << n << " values");
  std::vector<int64_t> v(static_cast<size_t>(n));
  TESSERA_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, v.data()) >= 0,
                where << ": cannot read attribute '" << name << "' as integers");
  return v;
}

double get_attr_double(hid_t obj, const char* name, const std::string& where) {
  TESSERA_CHECK(has_attr(obj, name), where << ": attribute '" << name << "' is missing");
  H5Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  double v = 0;
  TESSERA_CHECK(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &v) >= 0,
                where << ": cannot read attribute '" << name << "' as a number");
  return v;
}

int64_t get_attr_int(hid_t obj, const char* name, const std::string& where) {
  TESSERA_CHECK(has_attr(obj, name), where << ": attribute '" << name << "' is missing");
  H5Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  int64_t v = 0;
  TESSERA_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &v) >= 0,
                where << ": cannot read attribute '" << name << "' as an integer");
  return v;
}

// ---- plain 1-d datasets ---------------------------------------------------------------------

template <typename T>
void write_vector(hid_t group, const char* name, const std::vector<T>& v, hid_t type) {
  hsize_t dims[1] = {hsize_t(v.size())};
  H5Handle space(H5Screate_simple(1, dims, nullptr), H5Sclose);
  H5Handle ds(H5Dcreate2(group, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              H5Dclose);
  TESSERA_CHECK(ds.ok(), "cannot create dataset " << name);
  if (!v.empty())
    TESSERA_CHECK(H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) >= 0,
                  "cannot write dataset " << name);
}

template <typename T>
std::vector<T> read_vector(hid_t group, const char* name, hid_t type, const std::string& where) {
  if (H5Lexists(group, name, H5P_DEFAULT) <= 0) return {};
  H5Handle ds(H5Dopen2(group, name, H5P_DEFAULT), H5Dclose);
  H5Handle space(H5Dget_space(ds.get()), H5Sclose);
  TESSERA_CHECK(H5Sget_simple_extent_ndims(space.get()) == 1,
                where << ": dataset '" << name << "' is not 1-d");
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space.get(), &n, nullptr);
  std::vector<T> out(n);
  if (n > 0)
    TESSERA_CHECK(H5Dread(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) >= 0,
                  where << ": cannot read dataset '" << name << "' (corrupt file?)");
  return out;
}

void write_strings(hid_t group, const std::string& name, const std::vector<std::string>& strs) {
  std::vector<uint8_t> bytes;
  std::vector<int64_t> offsets{0};
  for (const auto& s : strs) {
    bytes.insert(bytes.end(), s.begin(), s.end());
    offsets.push_back(int64_t(bytes.size()));
  }
  write_vector(group, (name + "_bytes").c_str(), bytes, H5T_NATIVE_UINT8);
  write_vector(group, (name + "_offsets").c_str(), offsets, H5T_NATIVE_INT64);
}

std::vector<std::string> read_strings(hid_t group, const std::string& name,
                                      const std::string& where) {
  auto bytes = read_vector<uint8_t>(group, (name + "_bytes").c_str(), H5T_NATIVE_UINT8, where);
  auto offsets = read_vector<int64_t>(group, (name + "_offsets").c_str(), H5T_NATIVE_INT64, where);
  std::vector<std::string> out;
  if (offsets.empty()) return out;
  TESSERA_CHECK(offsets.front() == 0 && offsets.back() == int64_t(bytes.size()),
                where << ": string table '" << name << "' is inconsistent");
  for (size_t i = 0; i + 1 < offsets.size(); ++i) {
    TESSERA_CHECK(offsets[i] <= offsets[i + 1],
                  where << ": string table '" << name << "' has decreasing offsets");
    out.emplace_back(reinterpret_cast<const char*>(bytes.data()) + offsets[i],
                     size_t(offsets[i + 1] - offsets[i]));
  }
  return out;
}

// The most telling line of HDF5's error stack: one that mentions a checksum if any does
// (corruption), else the outermost.
std::string hdf5_error_text() {
  std::vector<std::string> lines;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
        if (e->desc) static_cast<std::vector<std::string>*>(data)->push_back(e->desc);
        return 0;
      },
      &lines);
  for (const auto& l : lines)
    if (l.find("checksum") != std::string::npos || l.find("Fletcher") != std::string::npos)
      return l;
  return lines.empty() ? std::string("unknown HDF5 error") : lines.front();
}

}  // namespace

// ============================================================================================
// Writer

struct ModelWriter::Impl {
  std::string path, partial;
  H5Handle file, weights;
  bool finished = false;
};

ModelWriter::ModelWriter(const std::string& path) : impl_(std::make_unique<Impl>()) {
  silence_hdf5();
  impl_->path = path;
  impl_->partial = path + ".partial";
  impl_->file = H5Handle(
      H5Fcreate(impl_->partial.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  TESSERA_CHECK_IO(impl_->file.ok(), impl_->partial << ": cannot create the model file");
  impl_->weights = H5Handle(
      H5Gcreate2(impl_->file.get(), "weights", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  TESSERA_CHECK(impl_->weights.ok(), impl_->partial << ": cannot create /weights");
}

ModelWriter::~ModelWriter() {
  if (!impl_->finished) {
    impl_->weights = H5Handle();
    impl_->file = H5Handle();
    std::remove(impl_->partial.c_str());
  }
}

void ModelWriter::write_config(const ModelConfig& c, const std::string& source) {
  c.validate();
  const hid_t f = impl_->file.get();
  set_attr_string(f, "format", "tessera-model");
  set_attr_num<int64_t>(f, "format_version", kModelFormatVersion);
  set_attr_string(f, "source", source);
  set_attr_string(f, "weight_orientation", "out_features x in_features");
  set_attr_string(f, "rope_convention", "rotate_half");
  set_attr_string(f, "architecture", c.architecture);
  set_attr_num<int64_t>(f, "vocab_size", c.vocab_size);
  set_attr_num<int64_t>(f, "hidden_size", c.hidden_size);
  set_attr_num<int64_t>(f, "intermediate_size", c.intermediate_size);
  set_attr_num<int64_t>(f, "num_layers", c.num_layers);
  set_attr_num<int64_t>(f, "num_heads", c.num_heads);
  set_attr_num<int64_t>(f, "num_kv_heads", c.num_kv_heads);
  set_attr_num<int64_t>(f, "head_dim", c.head_dim);
  set_attr_num<int64_t>(f, "max_position_embeddings", c.max_position_embeddings);
  set_attr_num<double>(f, "rms_norm_eps", c.rms_norm_eps);
  set_attr_num<double>(f, "rope_theta", c.rope_theta);
  set_attr_string(f, "rope_scaling_type", rope_scaling_name(c.rope_scaling.type));
  set_attr_num<double>(f, "rope_scaling_factor", c.rope_scaling.factor);
  set_attr_num<double>(f, "rope_low_freq_factor", c.rope_scaling.low_freq_factor);
  set_attr_num<double>(f, "rope_high_freq_factor", c.rope_scaling.high_freq_factor);
  set_attr_num<int64_t>(f, "rope_original_max_position", c.rope_scaling.original_max_position);
  set_attr_num<int64_t>(f, "tie_word_embeddings", c.tie_word_embeddings ? 1 : 0);
  set_attr_num<int64_t>(f, "attention_bias", c.attention_bias ? 1 : 0);
}

void ModelWriter::write_tokenizer(const TokenizerData& t) {
  H5Handle g(H5Gcreate2(impl_->file.get(), "tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             H5Gclose);
  TESSERA_CHECK(g.ok(), impl_->partial << ": cannot create /tokenizer");
  set_attr_string(g.get(), "model", t.model);
  set_attr_string(g.get(), "pre", t.pre);
  set_attr_num<int64_t>(g.get(), "bos_id", t.bos_id);
  set_attr_num<int64_t>(g.get(), "eos_id", t.eos_id);
  set_attr_num<int64_t>(g.get(), "unk_id", t.unk_id);
  set_attr_num<int64_t>(g.get(), "pad_id", t.pad_id);
  set_attr_num<int64_t>(g.get(), "add_bos", t.add_bos);
  set_attr_num<int64_t>(g.get(), "add_eos", t.add_eos);
  set_attr_num<int64_t>(g.get(), "add_space_prefix", t.add_space_prefix);
  write_strings(g.get(), "tokens", t.tokens);
  write_strings(g.get(), "merges", t.merges);
  write_vector(g.get(), "scores", t.scores, H5T_NATIVE_FLOAT);
  write_vector(g.get(), "token_types", t.token_types, H5T_NATIVE_INT32);
  write_vector(g.get(), "stop_ids", t.stop_ids, H5T_NATIVE_INT32);
  std::vector<uint8_t> tmpl(t.chat_template.begin(), t.chat_template.end());
  write_vector(g.get(), "chat_template", tmpl, H5T_NATIVE_UINT8);
}

void ModelWriter::write_weight(const std::string& name, const Shape& shape, const float* values,
                               DType stored) {
  const int64_t n = shape_numel(shape);
  if (stored == DType::kF32) return write_weight_bytes(name, shape, values, stored);
  std::vector<uint8_t> bytes(dtype_bytes(stored, n));  // (write_weight_bytes checks the rest)
  if (dtype_is_quantized(stored)) {
    try {
      quantize(stored, values, bytes.data(), n);
    } catch (const Error& e) {
      TESSERA_FAIL("weight " << name << ": " << e.what());
    }
  } else {
    convert_from_f32(stored, values, bytes.data(), size_t(n));
  }
  write_weight_bytes(name, shape, bytes.data(), stored);
}

void ModelWriter::write_weight_bytes(const std::string& name, const Shape& shape,
                                     const void* bytes, DType stored) {
  TESSERA_CHECK(stored == DType::kF32 || stored == DType::kF16 || stored == DType::kBF16 ||
                    dtype_is_quantized(stored) || (stored == DType::kI32 && shape.size() == 1),
                "weights are stored as f32, f16, bf16 or a quantized format (or a 1-d i32 "
                "input order), not "
                    << dtype_name(stored) << " " << shape_str(shape));
  TESSERA_CHECK(!shape.empty() && shape.size() <= 2,
                "weight " << name << " has shape " << shape_str(shape) << " (1-d or 2-d only)");
  const int64_t n = shape_numel(shape);
  TESSERA_CHECK(n > 0, "weight " << name << " is empty");
  const bool quantized = dtype_is_quantized(stored);
  const int64_t row = shape.size() == 2 ? shape[1] : 1;
  TESSERA_CHECK(!quantized || (shape.size() == 2 && row % dtype_block_elements(stored) == 0),
                "weight " << name << " " << shape_str(shape) << ": rows of " << row
                          << " are not whole " << dtype_name(stored) << " blocks of "
                          << dtype_block_elements(stored));
  // A quantized weight is a u8 dataset of its rows' bytes.
  const int64_t row_bytes = int64_t(dtype_bytes(stored, row));
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  if (quantized) dims[1] = hsize_t(row_bytes);
  H5Handle space(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
  // Chunks of whole rows, about 1 MiB each, with a Fletcher32 checksum per chunk.
  const int64_t rows_per_chunk = std::clamp<int64_t>((1 << 20) / row_bytes, 1, shape[0]);
  std::vector<hsize_t> chunk = dims;
  chunk[0] = hsize_t(rows_per_chunk);
  H5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_chunk(dcpl.get(), int(chunk.size()), chunk.data());
  H5Pset_fletcher32(dcpl.get());
  const hid_t type = quantized ? H5T_NATIVE_UINT8 : native_type(stored);
  H5Handle ds(H5Dcreate2(impl_->weights.get(), name.c_str(), type, space.get(), H5P_DEFAULT,
                         dcpl.get(), H5P_DEFAULT),
              H5Dclose);
  TESSERA_CHECK(ds.ok(), impl_->partial << ": cannot create dataset " << name);
  set_attr_string(ds.get(), "dtype", std::string(dtype_name(stored)));
  if (quantized) {
    set_attr_ints(ds.get(), "shape", {shape[0], shape[1]});
    set_attr_num<int64_t>(ds.get(), "block_elements", dtype_block_elements(stored));
    set_attr_num<int64_t>(ds.get(), "block_bytes", int64_t(dtype_block_bytes(stored)));
  }
  TESSERA_CHECK_IO(H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes) >= 0,
                   impl_->partial << ": cannot write dataset " << name);
}

void ModelWriter::finish() {
  impl_->weights = H5Handle();
  TESSERA_CHECK_IO(H5Fflush(impl_->file.get(), H5F_SCOPE_GLOBAL) >= 0,
                      impl_->partial << ": flush failed");
  const hid_t file = impl_->file.release();  // closed here, where a failure can be reported
  TESSERA_CHECK_IO(H5Fclose(file) >= 0, impl_->partial << ": closing the file failed");
  std::error_code ec;
  std::filesystem::rename(impl_->partial, impl_->path, ec);
  TESSERA_CHECK(!ec, "cannot rename " << impl_->partial << " to " << impl_->path << ": "
                                      << ec.message());
  impl_->finished = true;
}

// ============================================================================================
// Reader

struct ModelReader::Impl {
  std::string path, source;
  H5Handle file, weights;
  ModelConfig config;
  std::map<std::string, WeightInfo> infos;
  mutable uint64_t bytes_read = 0;
};

ModelReader::ModelReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  silence_hdf5();
  impl_->path = path;
  TESSERA_CHECK(std::filesystem::exists(path), path << ": no such model file");
  TESSERA_CHECK(H5Fis_hdf5(path.c_str()) > 0,
                path << ": not an HDF5 file (truncated, or convert it first with tessera convert)");
  impl_->file = H5Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  TESSERA_CHECK(impl_->file.ok(),
                path << ": cannot open the HDF5 file (" << hdf5_error_text() << ")");
  const hid_t f = impl_->file.get();
  TESSERA_CHECK(has_attr(f, "format") && get_attr_string(f, "format", path) == "tessera-model",
                path << ": not a tessera model file (no format = tessera-model attribute)");
  // Version 1 (before quantized weights) holds only f32, f16 and bf16 weights, which version 2
  // stores the same way: both are read.
  const int64_t version = get_attr_int(f, "format_version", path);
  TESSERA_CHECK(version == 1 || version == kModelFormatVersion,
                path << ": model format version " << version << ", this tessera reads versions 1 "
                     << "to " << kModelFormatVersion << " (convert the model again)");
  impl_->source = get_attr_string(f, "source", path);
  ModelConfig& c = impl_->config;
  c.architecture = get_attr_string(f, "architecture", path);
  c.vocab_size = get_attr_int(f, "vocab_size", path);
  c.hidden_size = get_attr_int(f, "hidden_size", path);
  c.intermediate_size = get_attr_int(f, "intermediate_size", path);
  c.num_layers = get_attr_int(f, "num_layers", path);
  c.num_heads = get_attr_int(f, "num_heads", path);
  c.num_kv_heads = get_attr_int(f, "num_kv_heads", path);
  c.head_dim = get_attr_int(f, "head_dim", path);
  c.max_position_embeddings = get_attr_int(f, "max_position_embeddings", path);
  c.rms_norm_eps = float(get_attr_double(f, "rms_norm_eps", path));
  c.rope_theta = float(get_attr_double(f, "rope_theta", path));
  const std::string rope_type = get_attr_string(f, "rope_scaling_type", path);
  if (rope_type == "llama3") {
    c.rope_scaling.type = ops::RopeScaling::Type::kLlama3;
  } else if (rope_type == "linear") {
    c.rope_scaling.type = ops::RopeScaling::Type::kLinear;
  } else {
    TESSERA_CHECK(rope_type == "none", path << ": unknown rope_scaling_type '" << rope_type << "'");
  }
  c.rope_scaling.factor = float(get_attr_double(f, "rope_scaling_factor", path));
  c.rope_scaling.low_freq_factor = float(get_attr_double(f, "rope_low_freq_factor", path));
  c.rope_scaling.high_freq_factor = float(get_attr_double(f, "rope_high_freq_factor", path));
  c.rope_scaling.original_max_position = int(get_attr_int(f, "rope_original_max_position", path));
  c.tie_word_embeddings = get_attr_int(f, "tie_word_embeddings", path) != 0;
  c.attention_bias = get_attr_int(f, "attention_bias", path) != 0;
  try {
    c.validate();
  } catch (const Error& e) {
    TESSERA_FAIL(path << ": " << e.what());
  }

  impl_->weights = H5Handle(H5Gopen2(f, "weights", H5P_DEFAULT), H5Gclose);
  TESSERA_CHECK(impl_->weights.ok(), path << ": the /weights group is missing");
  // The callback runs inside HDF5's C frames: it must not throw, so it records the first problem
  // and stops the iteration; the problem is thrown from here.
  struct Scan {
    Impl* impl;
    std::string problem;
  } scan{impl_.get(), ""};
  H5Literate(
      impl_->weights.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t group, const char* name, const H5L_info_t*, void* data) -> herr_t {
        auto* scan = static_cast<Scan*>(data);
        try {
          H5Handle ds(H5Dopen2(group, name, H5P_DEFAULT), H5Dclose);
          TESSERA_CHECK(ds.ok(), "/weights/" << name << " is not a dataset");
          H5Handle space(H5Dget_space(ds.get()), H5Sclose);
          const int nd = H5Sget_simple_extent_ndims(space.get());
          TESSERA_CHECK(nd == 1 || nd == 2, "/weights/" << name << " has " << nd << " dimensions");
          hsize_t dims[2] = {0, 0};
          H5Sget_simple_extent_dims(space.get(), dims, nullptr);
          WeightInfo info;
          info.name = name;
          for (int i = 0; i < nd; ++i) info.shape.push_back(int64_t(dims[i]));
          info.dtype = dtype_from_name(get_attr_string(ds.get(), "dtype", name));
          TESSERA_CHECK(info.dtype == DType::kF32 || info.dtype == DType::kF16 ||
                            info.dtype == DType::kBF16 || dtype_is_quantized(info.dtype) ||
                            (info.dtype == DType::kI32 && nd == 1),
                        "/weights/" << name << " has dtype " << dtype_name(info.dtype));
          if (dtype_is_quantized(info.dtype)) {  // u8 rows of blocks: the shape counts elements
            const std::vector<int64_t> shape = get_attr_ints(ds.get(), "shape", name);
            H5Handle type(H5Dget_type(ds.get()), H5Tclose);
            TESSERA_CHECK(H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_size(type.get()) == 1,
                          "/weights/" << name << " is " << dtype_name(info.dtype)
                                      << " but not a dataset of bytes");
            TESSERA_CHECK(get_attr_int(ds.get(), "block_elements", name) ==
                                  dtype_block_elements(info.dtype) &&
                              get_attr_int(ds.get(), "block_bytes", name) ==
                                  int64_t(dtype_block_bytes(info.dtype)),
                          "/weights/" << name << ": its block attributes are not "
                                      << dtype_name(info.dtype) << "'s ("
                                      << dtype_block_elements(info.dtype) << " elements in "
                                      << dtype_block_bytes(info.dtype) << " bytes)");
            TESSERA_CHECK(nd == 2 && shape.size() == 2 && shape[0] == int64_t(dims[0]) &&
                              shape[1] > 0 && shape[1] % dtype_block_elements(info.dtype) == 0 &&
                              dtype_bytes(info.dtype, shape[1]) == dims[1],
                          "/weights/" << name << ": " << dims[0] << " x " << dims[1]
                                      << " bytes do not hold " << dtype_name(info.dtype)
                                      << " blocks of its shape");
            info.shape = shape;
          }
          scan->impl->infos[name] = info;
          return 0;
        } catch (const std::exception& e) {
          scan->problem = e.what();
          return -1;
        }
      },
      &scan);
  TESSERA_CHECK(scan.problem.empty(), path << ": " << scan.problem);
  TESSERA_CHECK(!impl_->infos.empty(), path << ": /weights holds no readable dataset");
}

ModelReader::~ModelReader() = default;

const std::string& ModelReader::path() const { return impl_->path; }
const ModelConfig& ModelReader::config() const { return impl_->config; }
const std::string& ModelReader::source() const { return impl_->source; }
uint64_t ModelReader::bytes_read() const { return impl_->bytes_read; }

TokenizerData ModelReader::read_tokenizer() const {
  const std::string& p = impl_->path;
  TESSERA_CHECK(H5Lexists(impl_->file.get(), "tokenizer", H5P_DEFAULT) > 0,
                p << ": the model file has no tokenizer (/tokenizer is missing)");
  H5Handle g(H5Gopen2(impl_->file.get(), "tokenizer", H5P_DEFAULT), H5Gclose);
  TokenizerData t;
  const std::string where = p + " /tokenizer";
  t.model = get_attr_string(g.get(), "model", where);
  t.pre = get_attr_string(g.get(), "pre", where);
  t.bos_id = int32_t(get_attr_int(g.get(), "bos_id", where));
  t.eos_id = int32_t(get_attr_int(g.get(), "eos_id", where));
  t.unk_id = int32_t(get_attr_int(g.get(), "unk_id", where));
  t.pad_id = int32_t(get_attr_int(g.get(), "pad_id", where));
  t.add_bos = get_attr_int(g.get(), "add_bos", where) != 0;
  t.add_eos = get_attr_int(g.get(), "add_eos", where) != 0;
  t.add_space_prefix = get_attr_int(g.get(), "add_space_prefix", where) != 0;
  t.tokens = read_strings(g.get(), "tokens", where);
  t.merges = read_strings(g.get(), "merges", where);
  t.scores = read_vector<float>(g.get(), "scores", H5T_NATIVE_FLOAT, where);
  t.token_types = read_vector<int32_t>(g.get(), "token_types", H5T_NATIVE_INT32, where);
  t.stop_ids = read_vector<int32_t>(g.get(), "stop_ids", H5T_NATIVE_INT32, where);
  auto tmpl = read_vector<uint8_t>(g.get(), "chat_template", H5T_NATIVE_UINT8, where);
  t.chat_template.assign(tmpl.begin(), tmpl.end());
  TESSERA_CHECK(!t.tokens.empty(), where << ": the vocabulary is empty");
  return t;
}

std::vector<WeightInfo> ModelReader::weights() const {
  std::vector<WeightInfo> out;
  for (const auto& [name, info] : impl_->infos) out.push_back(info);
  return out;
}

bool ModelReader::has_weight(const std::string& name) const {
  return impl_->infos.count(name) > 0;
}

WeightInfo ModelReader::weight_info(const std::string& name) const {
  auto it = impl_->infos.find(name);
  TESSERA_CHECK(it != impl_->infos.end(), impl_->path << ": weight '" << name << "' is missing");
  return it->second;
}

Tensor ModelReader::read_weight(const std::string& name) const {
  const WeightInfo info = weight_info(name);
  const int64_t rows = info.shape[0];
  const int64_t cols = info.shape.size() == 2 ? info.shape[1] : 0;
  return read_weight_slice(name, 0, rows, 0, cols);
}

Tensor ModelReader::read_weight_slice(const std::string& name, int64_t r0, int64_t r1, int64_t c0,
                                      int64_t c1, As as) const {
  const WeightInfo info = weight_info(name);
  const bool two_d = info.shape.size() == 2;
  TESSERA_CHECK(0 <= r0 && r0 <= r1 && r1 <= info.shape[0] &&
                    (two_d ? (0 <= c0 && c0 <= c1 && c1 <= info.shape[1]) : (c0 == 0 && c1 == 0)),
                impl_->path << ": slice [" << r0 << ", " << r1 << ") x [" << c0 << ", " << c1
                            << ") is outside weight " << name << " " << shape_str(info.shape));
  const int64_t block = dtype_block_elements(info.dtype);
  TESSERA_CHECK(c0 % block == 0 && c1 % block == 0,
                impl_->path << ": columns [" << c0 << ", " << c1 << ") of weight " << name
                            << " cut its " << dtype_name(info.dtype) << " blocks of " << block
                            << " elements");
  const Shape shape = two_d ? Shape{r1 - r0, c1 - c0} : Shape{r1 - r0};
  Tensor stored = Tensor::empty(shape, info.dtype);
  if (stored.numel() > 0) {
    H5Handle ds(H5Dopen2(impl_->weights.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
    TESSERA_CHECK(ds.ok(), impl_->path << ": cannot open weight " << name);
    H5Handle fspace(H5Dget_space(ds.get()), H5Sclose);
    // A quantized weight's columns are bytes: block b starts at b * block_bytes.
    const bool quantized = dtype_is_quantized(info.dtype);
    const auto col = [&](int64_t c) { return quantized ? int64_t(dtype_bytes(info.dtype, c)) : c; };
    hsize_t start[2] = {hsize_t(r0), hsize_t(col(c0))};
    hsize_t count[2] = {hsize_t(r1 - r0), hsize_t(col(c1) - col(c0))};
    H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
    H5Handle mspace(H5Screate_simple(two_d ? 2 : 1, count, nullptr), H5Sclose);
    const hid_t type = quantized ? H5T_NATIVE_UINT8 : native_type(info.dtype);
    if (H5Dread(ds.get(), type, mspace.get(), fspace.get(), H5P_DEFAULT, stored.raw()) < 0) {
      const std::string why = hdf5_error_text();
      TESSERA_FAIL(impl_->path << ": cannot read weight " << name << ": "
                               << (why.find("checksum") != std::string::npos
                                       ? "checksum mismatch (the file is corrupt)"
                                       : why));
    }
    impl_->bytes_read += stored.nbytes();
  }
  if (as == As::kStored || info.dtype == DType::kF32) return stored;
  Tensor out = Tensor::empty(shape, DType::kF32);
  convert_to_f32(info.dtype, stored.raw(), out.data<float>(), size_t(out.numel()));
  return out;
}

ModelDims layout_dims(const ModelReader& reader) {
  ModelDims d = layout_dims(reader.config());
  for (const WeightInfo& w : reader.weights()) {
    const bool o = w.name.find("self_attn.o_proj.weight") != std::string::npos;
    const bool down = w.name.find("mlp.down_proj.weight") != std::string::npos;
    InputBlocks* blocks = o ? &d.attention_output : down ? &d.ffn_down : nullptr;
    // (a weight with an input order is regrouped for any split of its features at load:
    // runtime/weight_source.h, read_reordered_columns)
    const std::string base = w.name.substr(0, w.name.size() - std::string(".weight").size());
    if (blocks && reader.has_weight(base + ".input_order")) continue;
    if (blocks && dtype_block_elements(w.dtype) > blocks->elements)
      *blocks = {w.name, std::string(dtype_name(w.dtype)), dtype_block_elements(w.dtype)};
  }
  return d;
}

}  // namespace tessera
