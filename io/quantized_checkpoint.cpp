#include "io/quantized_checkpoint.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "io/llama_tensors.h"
#include "io/safetensors.h"
#include "kernels/error.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Method = CheckpointQuantization::Method;

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The first of `keys` that `j` has (a number), or `fallback`.
int64_t int_setting(const json& j, std::initializer_list<const char*> keys, int64_t fallback) {
  for (const char* k : keys)
    if (j.contains(k) && j[k].is_number_integer()) return j[k].get<int64_t>();
  return fallback;
}

std::string string_setting(const json& j, const char* key, const std::string& fallback) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : fallback;
}


std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

// The tensor `name`, checked to be of `dtype` and `shape`.
const SafetensorsTensorInfo& need(const SafetensorsCheckpoint& ckpt, const std::string& name,
                                  const std::string& dtype, const std::vector<int64_t>& shape) {
  const SafetensorsTensorInfo* t = ckpt.find(name);
  TESSERA_CHECK(t != nullptr, ckpt.dir() << ": tensor '" << name << "' is missing");
  TESSERA_CHECK(t->dtype == dtype && t->shape == shape,
                ckpt.dir() << ": tensor '" << name << "' is " << t->dtype << " "
                           << shape_text(t->shape) << ", expected " << dtype << " "
                           << shape_text(shape));
  return *t;
}

uint32_t word_at(const uint8_t* p, int64_t i) {
  uint32_t w;
  std::memcpy(&w, p + 4 * i, 4);
  return w;
}

// ---- int4 groups ------------------------------------------------------------------------------

// A weight of 4-bit codes with a scale (f16 bits) and a zero point per (output feature, group).
struct Int4Weight {
  int64_t out = 0, in = 0, group = 0;  // group: input features per group (in for a whole row)
  std::vector<int32_t> input_order;    // the feature of each column, or empty: column k is k
  std::vector<uint8_t> codes;          // (out, in), column j feature input_order[j]
  std::vector<uint16_t> scales;        // (out, in / group)
  std::vector<uint8_t> zeros;          // (out, in / group)
};

// The blocks of w: i4_g32 for groups of 32 or 64, i4_g128 for multiples of 128 (each block lies in
// one group and carries its scale and zero).
ImportedWeight int4_blocks(const Int4Weight& w, const std::string& module) {
  int64_t block = 0;
  if (w.group % 128 == 0)
    block = 128;
  else if (w.group % 32 == 0 && w.group <= 64)
    block = 32;
  TESSERA_CHECK(block > 0, module << ": groups of " << w.group
                                  << " input features are not supported (32, 64 or a multiple of "
                                     "128 are)");
  ImportedWeight r;
  r.out_features = w.out;
  r.in_features = w.in;
  r.input_order = w.input_order;
  r.dtype = block == 128 ? DType::kI4G128 : DType::kI4G32;
  const size_t block_bytes = dtype_block_bytes(r.dtype);
  const int64_t groups = w.in / w.group, blocks = w.in / block;
  r.bytes.assign(size_t(w.out * blocks) * block_bytes, 0);
  for (int64_t n = 0; n < w.out; ++n)
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* p = r.bytes.data() + size_t(n * blocks + b) * block_bytes;
      const int64_t g = b * block / w.group;
      std::memcpy(p, &w.scales[size_t(n * groups + g)], 2);
      p[2] = w.zeros[size_t(n * groups + g)];
      const uint8_t* q = w.codes.data() + n * w.in + b * block;
      for (int64_t c = 0; c < block / 32; ++c)
        for (int j = 0; j < 16; ++j)
          p[4 + 16 * c + j] = uint8_t(q[32 * c + j] | q[32 * c + j + 16] << 4);
    }
  return r;
}

// w's scales and zero points from the checkpoint's f16 scales (groups, out) and zeros (groups,
// out / 8) packed 8 to a word: output feature 8c + p in nibble nibble_of[p] of word c, each zero
// plus zero_offset (GPTQ's legacy zeros are stored minus one).
void read_group_parameters(const uint8_t* scales, const uint8_t* zero_words,
                           const int (&nibble_of)[8], int zero_offset, Int4Weight& w) {
  const int64_t groups = w.in / w.group;
  w.scales.resize(size_t(w.out * groups));
  w.zeros.resize(size_t(w.out * groups));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t n = 0; n < w.out; ++n) {
      std::memcpy(&w.scales[size_t(n * groups + g)], scales + 2 * (g * w.out + n), 2);
      const uint32_t word = word_at(zero_words, g * (w.out / 8) + n / 8);
      w.zeros[size_t(n * groups + g)] =
          uint8_t(((word >> (4 * nibble_of[n % 8])) & 15) + zero_offset);
    }
}

// The group size of a weight of `in` input features: the configured one, or `in` for -1.
int64_t group_of(const CheckpointQuantization& q, int64_t in, const std::string& module) {
  const int64_t g = q.group_size == -1 ? in : q.group_size;
  TESSERA_CHECK(g > 0 && in % g == 0,
                module << ": " << in << " input features are not whole groups of " << g);
  return g;
}

// module's qweight, checked to be 2-d words (`layout` names its dimensions for the error).
const SafetensorsTensorInfo& packed_words(const SafetensorsCheckpoint& ckpt,
                                          const std::string& module, const char* layout) {
  const SafetensorsTensorInfo& qw = ckpt.at(module + ".qweight");
  TESSERA_CHECK(qw.dtype == "I32" && qw.shape.size() == 2,
                ckpt.dir() << ": tensor '" << module << ".qweight' is " << qw.dtype << " "
                           << shape_text(qw.shape) << ", expected I32 " << layout);
  return qw;
}

ImportedWeight import_awq(const SafetensorsCheckpoint& ckpt, const CheckpointQuantization& q,
                          const std::string& module) {
  const SafetensorsTensorInfo* qw = &packed_words(ckpt, module, "(in, out / 8)");
  Int4Weight w;
  w.in = qw->shape[0];
  w.out = qw->shape[1] * 8;
  w.group = group_of(q, w.in, module);
  const int64_t groups = w.in / w.group;
  need(ckpt, module + ".qzeros", "I32", {groups, w.out / 8});
  need(ckpt, module + ".scales", "F16", {groups, w.out});
  const uint8_t* words = ckpt.raw(module + ".qweight").data();
  const uint8_t* zero_words = ckpt.raw(module + ".qzeros").data();
  const uint8_t* scales = ckpt.raw(module + ".scales").data();
  // Output feature 8c + p is in nibble kNibble[p] of word c (AutoAWQ packs [0, 2, 4, 6, 1, 3, 5,
  // 7]).
  constexpr int kNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  w.codes.resize(size_t(w.out * w.in));
  for (int64_t k = 0; k < w.in; ++k)
    for (int64_t c = 0; c < w.out / 8; ++c) {
      const uint32_t word = word_at(words, k * (w.out / 8) + c);
      for (int p = 0; p < 8; ++p)
        w.codes[size_t((8 * c + p) * w.in + k)] = uint8_t((word >> (4 * kNibble[p])) & 15);
    }
  read_group_parameters(scales, zero_words, kNibble, 0, w);
  return int4_blocks(w, module);
}

ImportedWeight import_gptq(const SafetensorsCheckpoint& ckpt, const CheckpointQuantization& q,
                           const std::string& module) {
  const SafetensorsTensorInfo* qw = &packed_words(ckpt, module, "(in / 8, out)");
  Int4Weight w;
  w.in = qw->shape[0] * 8;
  w.out = qw->shape[1];
  w.group = group_of(q, w.in, module);
  const int64_t groups = w.in / w.group;
  TESSERA_CHECK(w.out % 8 == 0,
                module << ": " << w.out << " output features are not whole words of 8");
  need(ckpt, module + ".qzeros", "I32", {groups, w.out / 8});
  const SafetensorsTensorInfo* s = ckpt.find(module + ".scales");
  TESSERA_CHECK(s == nullptr || s->dtype != "BF16",
                ckpt.dir() << ": tensor '" << module
                           << ".scales' is BF16: GPTQ scales in bf16 are not "
                              "supported (f16 is)");
  need(ckpt, module + ".scales", "F16", {groups, w.out});
  // Act-order (desc_act): g_idx puts the input features in groups out of their order. The
  // columns are then stored sorted by group (stably), each group's g together, with the feature
  // each column reads (input_order).
  if (ckpt.find(module + ".g_idx")) {
    need(ckpt, module + ".g_idx", "I32", {w.in});
    const uint8_t* raw = ckpt.raw(module + ".g_idx").data();
    std::vector<int32_t> g_idx(size_t(w.in));
    bool in_order = true;
    std::vector<int64_t> members(size_t(groups), 0);
    for (int64_t k = 0; k < w.in; ++k) {
      g_idx[size_t(k)] = int32_t(word_at(raw, k));
      TESSERA_CHECK(g_idx[size_t(k)] >= 0 && g_idx[size_t(k)] < groups,
                    ckpt.dir() << ": " << module << ".g_idx puts input feature " << k
                               << " in group " << g_idx[size_t(k)] << " of " << groups);
      ++members[size_t(g_idx[size_t(k)])];
      in_order &= g_idx[size_t(k)] == k / w.group;
    }
    if (!in_order) {
      for (int64_t g = 0; g < groups; ++g)
        TESSERA_CHECK(members[size_t(g)] == w.group,
                      ckpt.dir() << ": " << module << ".g_idx puts " << members[size_t(g)]
                                 << " input features in group " << g << ", not group_size "
                                 << w.group << " (act-order with unequal groups is not supported)");
      w.input_order.resize(size_t(w.in));
      for (int64_t k = 0; k < w.in; ++k) w.input_order[size_t(k)] = int32_t(k);
      std::stable_sort(w.input_order.begin(), w.input_order.end(),
                       [&](int32_t a, int32_t b) { return g_idx[size_t(a)] < g_idx[size_t(b)]; });
    }
  }
  const uint8_t* words = ckpt.raw(module + ".qweight").data();
  const uint8_t* zero_words = ckpt.raw(module + ".qzeros").data();
  const uint8_t* scales = ckpt.raw(module + ".scales").data();
  // column[k]: where feature k's codes go
  std::vector<int64_t> column(size_t(w.in));
  for (int64_t j = 0; j < w.in; ++j)
    column[size_t(w.input_order.empty() ? j : w.input_order[size_t(j)])] = j;
  w.codes.resize(size_t(w.out * w.in));
  for (int64_t r = 0; r < w.in / 8; ++r)
    for (int64_t n = 0; n < w.out; ++n) {
      const uint32_t word = word_at(words, r * w.out + n);
      for (int i = 0; i < 8; ++i)
        w.codes[size_t(n * w.in + column[size_t(8 * r + i)])] = uint8_t((word >> (4 * i)) & 15);
    }
  constexpr int kInOrder[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  read_group_parameters(scales, zero_words, kInOrder, q.legacy_zeros ? 1 : 0, w);
  return int4_blocks(w, module);
}

// ---- FP8 --------------------------------------------------------------------------------------

// A tensor of scales as float32 (F32 as is; BF16 and F16 exactly).
std::vector<float> scales_f32(const SafetensorsCheckpoint& ckpt, const SafetensorsTensorInfo& t) {
  TESSERA_CHECK(t.dtype == "F32" || t.dtype == "BF16" || t.dtype == "F16",
                ckpt.dir() << ": tensor '" << t.name << "' is " << t.dtype
                           << ", expected F32, BF16 or F16 scales");
  return ckpt.read_f32(t.name);
}

ImportedWeight import_fp8(const SafetensorsCheckpoint& ckpt, const std::string& module) {
  const SafetensorsTensorInfo& wt = ckpt.at(module + ".weight");
  TESSERA_CHECK(wt.dtype == "F8_E4M3", ckpt.dir() << ": tensor '" << wt.name << "' is " << wt.dtype
                                                  << ": FP8 weights in e4m3 are supported, not "
                                                  << wt.dtype);
  TESSERA_CHECK(wt.shape.size() == 2, ckpt.dir() << ": tensor '" << wt.name << "' is not 2-d");
  const int64_t out = wt.shape[0], in = wt.shape[1];
  TESSERA_CHECK(in % 128 == 0,
                module << ": FP8 rows of " << in << " input features are not whole blocks of 128");
  // scale(n, kb): the scale of output feature n's block kb of 128 input features.
  const SafetensorsTensorInfo* per = ckpt.find(module + ".weight_scale");
  const SafetensorsTensorInfo* inv = ckpt.find(module + ".weight_scale_inv");
  TESSERA_CHECK((per != nullptr) != (inv != nullptr),
                ckpt.dir() << ": " << module << " needs one of weight_scale and weight_scale_inv");
  const SafetensorsTensorInfo& st = per ? *per : *inv;
  const std::vector<float> scale = scales_f32(ckpt, st);
  int64_t rows_per_scale = 0, cols_per_scale = 0;  // (out, in) elements one scale covers
  const int64_t n_scales = st.numel();
  if (n_scales == 1) {
    rows_per_scale = out;
    cols_per_scale = in;
  } else if (n_scales == out &&
             (st.shape.size() == 1 || (st.shape.size() == 2 && st.shape[1] == 1))) {
    rows_per_scale = 1;
    cols_per_scale = in;
  } else if (st.shape.size() == 2) {  // blocks (bo, bi): out / bo rows, in / bi columns, rounded up
    const int64_t r = st.shape[0], c = st.shape[1];
    for (int64_t bo : {128, 64, 32, 256, 1})
      if ((out + bo - 1) / bo == r) {
        rows_per_scale = bo;
        break;
      }
    for (int64_t bi : {128, 256, 512})
      if ((in + bi - 1) / bi == c) {
        cols_per_scale = bi;
        break;
      }
    TESSERA_CHECK(rows_per_scale > 0 && cols_per_scale > 0,
                  ckpt.dir() << ": tensor '" << st.name << "' " << shape_text(st.shape)
                             << " is not a scale per tensor, per output feature, or per block of "
                                "bo x bi with bi a multiple of 128, for a weight "
                             << shape_text(wt.shape));
  } else {
    TESSERA_FAIL(ckpt.dir() << ": tensor '" << st.name << "' " << shape_text(st.shape)
                            << " does not fit the weight " << shape_text(wt.shape));
  }
  const int64_t scale_cols = (in + cols_per_scale - 1) / cols_per_scale;
  ImportedWeight r;
  r.out_features = out;
  r.in_features = in;
  r.dtype = DType::kF8E4M3;
  const int64_t blocks = in / 128;
  r.bytes.resize(size_t(out * blocks) * 132);
  const uint8_t* codes = ckpt.raw(wt.name).data();
  for (int64_t n = 0; n < out; ++n)
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* p = r.bytes.data() + size_t(n * blocks + b) * 132;
      const float d = scale[size_t((n / rows_per_scale) * scale_cols + b * 128 / cols_per_scale)];
      std::memcpy(p, &d, 4);
      std::memcpy(p + 4, codes + n * in + b * 128, 128);
    }
  return r;
}

}  // namespace

CheckpointQuantization checkpoint_quantization(const json& config, const std::string& dir) {
  json qc;
  std::string where = dir + "/config.json quantization_config";
  std::string method_default;
  if (config.contains("quantization_config") && config["quantization_config"].is_object()) {
    qc = config["quantization_config"];
  } else if (fs::exists(fs::path(dir) / "quantize_config.json")) {
    qc = read_json_file((fs::path(dir) / "quantize_config.json").string());
    where = dir + "/quantize_config.json";
    method_default = "gptq";
  } else if (fs::exists(fs::path(dir) / "quant_config.json")) {
    qc = read_json_file((fs::path(dir) / "quant_config.json").string());
    where = dir + "/quant_config.json";
    method_default = "awq";
  } else {
    return {};
  }
  TESSERA_CHECK(qc.is_object(), where << " is not a JSON object");
  const std::string method = lower(string_setting(qc, "quant_method", method_default));
  CheckpointQuantization q;
  if (method == "awq" || method == "gptq") {
    const std::string name = method == "awq" ? "AWQ" : "GPTQ";
    const int64_t bits = int_setting(qc, {"bits", "w_bit"}, 4);
    TESSERA_CHECK(bits == 4,
                  where << ": " << name << " with bits=" << bits << " is not supported (4 is)");
    q.group_size = int_setting(qc, {"group_size", "q_group_size"}, 128);
    TESSERA_CHECK(q.group_size == -1 || q.group_size > 0,
                  where << ": group_size " << q.group_size << " is not a group size");
    if (method == "awq") {
      q.method = Method::kAwq;
      const std::string version = lower(string_setting(qc, "version", "gemm"));
      const bool zero_point = !qc.contains("zero_point") || qc["zero_point"] != false;
      TESSERA_CHECK(version == "gemm" && zero_point,
                    where << ": AWQ with " << (zero_point ? "" : "zero_point=false")
                          << (zero_point || version == "gemm" ? "" : " and ")
                          << (version == "gemm" ? "" : "version " + version)
                          << " is not supported (tessera reads AutoAWQ's GEMM layout with zero "
                             "points)");
    } else {
      q.method = Method::kGptq;
      const std::string format = lower(string_setting(qc, "checkpoint_format", "gptq"));
      TESSERA_CHECK(format == "gptq" || format == "gptq_v2",
                    where << ": GPTQ checkpoint_format '" << format
                          << "' is not supported (gptq and gptq_v2 are)");
      q.legacy_zeros = format == "gptq";
    }
    q.description = name + " int4, " +
                    (q.group_size == -1 ? std::string("a group per row")
                                        : "groups of " + std::to_string(q.group_size));
    return q;
  }
  if (method == "fp8" || method == "fbgemm_fp8") {
    const std::string fmt = lower(string_setting(qc, "fmt", "e4m3"));
    TESSERA_CHECK(fmt == "e4m3", where << ": FP8 fmt '" << fmt << "' is not supported (e4m3 is)");
    q.method = Method::kFp8;
    q.description = "FP8 e4m3";
    return q;
  }
  if (method == "compressed-tensors") {
    TESSERA_CHECK(qc.contains("config_groups") && qc["config_groups"].is_object() &&
                      !qc["config_groups"].empty(),
                  where << ": compressed-tensors without config_groups");
    for (const auto& [group, spec] : qc["config_groups"].items()) {
      const json weights = spec.is_object() && spec.contains("weights") ? spec["weights"] : json();
      const int64_t bits = weights.is_object() ? int_setting(weights, {"num_bits"}, 0) : 0;
      const std::string type = weights.is_object() ? string_setting(weights, "type", "?") : "?";
      TESSERA_CHECK(bits == 8 && type == "float",
                    where << ": compressed-tensors group " << group << " has " << type
                          << " weights of " << bits << " bits (format "
                          << string_setting(qc, "format", "?")
                          << "), which are not supported (8-bit float weights are)");
    }
    q.method = Method::kFp8;
    q.description = "FP8 e4m3 (compressed-tensors)";
    return q;
  }
  TESSERA_FAIL(where << ": quantization '" << method
                     << "' is not supported (tessera imports awq, gptq, fp8, fbgemm_fp8 and "
                        "compressed-tensors FP8 checkpoints)");
}

bool quantized_module_tensor(const SafetensorsCheckpoint& ckpt, const CheckpointQuantization& q,
                             const std::string& name, std::string& module, bool& is_weight) {
  auto split = [&](const char* suffix) {
    if (!ends_with(name, suffix)) return false;
    module = name.substr(0, name.size() - std::strlen(suffix));
    return true;
  };
  switch (q.method) {
    case Method::kNone:
      return false;
    case Method::kAwq:
    case Method::kGptq:
      for (const char* s : {".qweight", ".qzeros", ".scales", ".g_idx"})
        if (split(s) && ckpt.find(module + ".qweight")) {
          is_weight = std::strcmp(s, ".qweight") == 0;
          return true;
        }
      return false;
    case Method::kFp8: {
      auto fp8_weight = [&] {
        const SafetensorsTensorInfo* w = ckpt.find(module + ".weight");
        return w && w->dtype.rfind("F8_", 0) == 0;
      };
      for (const char* s : {".weight", ".weight_scale", ".weight_scale_inv", ".input_scale"})
        if (split(s) && fp8_weight()) {
          is_weight = std::strcmp(s, ".weight") == 0;
          return true;
        }
      return false;
    }
  }
  return false;
}

std::vector<std::string> kv_cache_scale_names(const std::string& name) {
  const std::string suffix = layer_suffix(name);
  if (suffix.rfind("self_attn.", 0) != 0) return {};
  const std::string attn = name.substr(0, name.size() - suffix.size()) + "self_attn.";
  if (ends_with(suffix, ".k_scale") || suffix == "self_attn.k_proj.output_scale")
    return {attn + "k_scale"};
  if (ends_with(suffix, ".v_scale") || suffix == "self_attn.v_proj.output_scale")
    return {attn + "v_scale"};
  if (ends_with(suffix, ".kv_scale")) return {attn + "k_scale", attn + "v_scale"};
  return {};
}

ImportedWeight import_quantized_weight(const SafetensorsCheckpoint& ckpt,
                                       const CheckpointQuantization& q, const std::string& module) {
  switch (q.method) {
    case Method::kAwq:
      return import_awq(ckpt, q, module);
    case Method::kGptq:
      return import_gptq(ckpt, q, module);
    case Method::kFp8:
      return import_fp8(ckpt, module);
    case Method::kNone:
      break;
  }
  TESSERA_FAIL(module << " is not quantized");
}

}  // namespace tessera
