#include "io/convert.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "io/ggml_quant.h"
#include "io/gguf.h"
#include "io/json_file.h"
#include "io/llama_tensors.h"
#include "io/model_store.h"
#include "io/quantized_checkpoint.h"
#include "io/safetensors.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- helpers --------------------------------------------------------------------------------

template <typename T>
T get_or(const json& j, const std::string& key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return it->get<T>();
}

DType stored_dtype(const std::string& option, DType source) {
  if (option == "auto") return source;
  TESSERA_CHECK(option == "f32" || option == "f16" || option == "bf16",
                "--dtype must be auto, f32, f16 or bf16, not '" << option << "'");
  return dtype_from_name(option);
}

// Maps a per-layer tensor suffix of one naming scheme to the canonical one.
struct NameMap {
  const char* from;
  const char* to;
};

// llama.cpp names -> canonical names.
constexpr NameMap kGgufLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

// Splits "<prefix><N>.<rest>" into layer N and rest; false when name does not start with prefix.
bool split_layer(const std::string& name, const std::string& prefix, int64_t& layer,
                 std::string& rest) {
  if (name.rfind(prefix, 0) != 0) return false;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return false;
  const std::string num = name.substr(prefix.size(), dot - prefix.size());
  if (num.empty() || num.size() > 6 || num.find_first_not_of("0123456789") != std::string::npos)
    return false;
  layer = std::stoll(num);
  rest = name.substr(dot + 1);
  return true;
}

// Writes tensors after checking each against the canonical table (llama_tensors.h): a known
// name, the shape the config implies, written once; finish() checks nothing required is missing.
class CheckedWriter {
 public:
  CheckedWriter(ModelWriter& w, const ModelConfig& c, std::string where, const ConvertOptions& o)
      : writer_(w),
        where_(std::move(where)),
        options_(o),
        layers_(c.num_layers),
        tied_(c.tie_word_embeddings) {
    for (TensorSpec& s : llama_tensor_specs(c)) specs_.emplace(s.name, std::move(s));
  }
  // The shape of canonical tensor `name`, after checking that it belongs to this model.
  const Shape& expect(const std::string& name, const std::string& source_name,
                      const Shape& shape) const {
    auto it = specs_.find(name);
    TESSERA_CHECK(it != specs_.end(), where_ << ": tensor '" << source_name
                                             << "' does not belong to a model of this config");
    TESSERA_CHECK(shape == it->second.shape,
                  where_ << ": tensor '" << source_name << "' has shape " << shape_str(shape)
                         << ", the config implies " << shape_str(it->second.shape));
    TESSERA_CHECK(!written_.count(name), where_ << ": tensor '" << source_name << "' appears twice");
    return it->second.shape;
  }
  // One tensor of the source, as float32 values of a source of type `source`.
  void write(const std::string& name, const std::vector<float>& values, DType source) {
    const Shape& shape = specs_.at(name).shape;
    const DType dt = stored(name, shape, source);
    writer_.write_weight(name, shape, values.data(), dt);
    written(name, shape, dt);
  }
  // One tensor of the source as its bytes of type `source` (a GGUF tensor): kept byte for byte
  // when it is stored as it is.
  void write_bytes(const std::string& name, const std::vector<uint8_t>& bytes, DType source) {
    const Shape& shape = specs_.at(name).shape;
    const DType dt = stored(name, shape, source);
    if (dt == source) {
      writer_.write_weight_bytes(name, shape, bytes.data(), dt);
    } else {
      std::vector<float> values(static_cast<size_t>(shape_numel(shape)));
      convert_to_f32(source, bytes.data(), values.data(), values.size());
      writer_.write_weight(name, shape, values.data(), dt);
    }
    written(name, shape, dt);
  }
  // A tensor stored as it is whatever the options: a weight's input order (i32) or a KV-cache
  // scale (f32), io/model_store.h.
  void write_as_is(const std::string& name, const void* data, DType dt) {
    const Shape& shape = specs_.at(name).shape;
    writer_.write_weight_bytes(name, shape, data, dt);
    written(name, shape, dt);
  }
  void finish(ConvertReport& report) {
    for (const auto& [name, spec] : specs_)
      TESSERA_CHECK(!spec.required || written_.count(name),
                    where_ << ": the tensor for '" << name << "' is missing");
    writer_.finish();
    report.tensors = report_.tensors;
    report.bytes_written = report_.bytes_written;
  }

 private:
  DType stored(const std::string& name, const Shape& shape, DType source) const {
    if (!options_.quantize.empty() && shape.size() == 2)
      return quantize_format(options_.quantize, name, layers_, shape[1], tied_);
    const DType dt = stored_dtype(options_.dtype, source);
    // (a quantized 1-d tensor, which GGUF writers do not make, is kept as float32)
    return dtype_is_quantized(dt) && shape.size() != 2 ? DType::kF32 : dt;
  }
  void written(const std::string& name, const Shape& shape, DType dt) {
    written_.insert(name);
    ++report_.tensors;
    report_.bytes_written += dtype_bytes(dt, shape_numel(shape));
  }

  ModelWriter& writer_;
  std::string where_;
  const ConvertOptions& options_;
  int64_t layers_;
  bool tied_;
  std::map<std::string, TensorSpec> specs_;
  std::set<std::string> written_;
  ConvertReport report_;
};

void report(const ConvertOptions& o, const std::string& msg) {
  if (!o.quiet) std::fprintf(stderr, "tessera convert: %s\n", msg.c_str());
}

// ---- GGUF -----------------------------------------------------------------------------------

ConvertReport convert_gguf(const std::string& input, const std::string& output,
                           const ConvertOptions& opt) {
  GgufFile gguf = GgufFile::open(input);
  const json& md = gguf.metadata();
  ConvertReport rep;
  rep.config = config_from_gguf(md, input);
  ModelConfig& c = rep.config;
  c.tie_word_embeddings = gguf.find("output.weight") == nullptr;
  c.attention_bias = gguf.find("blk.0.attn_q.bias") != nullptr;
  // The embedding table's rows are the model's vocabulary, whatever the metadata says.
  if (const GgufTensorInfo* e = gguf.find("token_embd.weight")) c.vocab_size = e->shape[0];
  c.validate();
  TokenizerData tok = tokenizer_from_gguf(md, input);

  // A tokenizer that cannot be built is refused now, not at the first load.
  Tokenizer{tok};

  ModelWriter w(output);
  w.write_config(c, "gguf:" + fs::path(input).filename().string());
  w.write_tokenizer(tok);
  CheckedWriter checked(w, c, input, opt);
  // llama.cpp permutes q/k rows for interleaved RoPE for the llama architecture only.
  const bool permuted = md.value("general.architecture", "") == "llama";
  for (const GgufTensorInfo& t : gguf.tensors()) {
    std::string name;
    int64_t layer = 0;
    std::string rest;
    if (t.name == "token_embd.weight") {
      name = "embed_tokens.weight";
    } else if (t.name == "output_norm.weight") {
      name = "norm.weight";
    } else if (t.name == "output.weight") {
      name = "lm_head.weight";
    } else if (t.name == "rope_freqs.weight") {
      name = "rope_freqs.weight";
    } else if (split_layer(t.name, "blk.", layer, rest)) {
      for (const NameMap& m : kGgufLayerNames)
        if (rest == m.from) name = "layers." + std::to_string(layer) + "." + m.to;
    }
    TESSERA_CHECK(!name.empty(), input << ": unknown tensor '" << t.name
                                       << "' (tessera knows the Llama-family tensors only)");
    const Shape& shape = checked.expect(name, t.name, t.shape);
    const std::optional<DType> type = dtype_of_ggml(t.ggml_type);
    TESSERA_CHECK(type.has_value(), input << ": tensor " << t.name << " has type "
                                          << ggml_type_name(t.ggml_type)
                                          << ", which tessera cannot read (it reads "
                                          << ggml_readable_types() << ")");
    const std::span<const uint8_t> raw = gguf.raw(t);  // (its size follows from shape and type)
    std::vector<uint8_t> bytes(raw.begin(), raw.end());
    if (permuted && (rest == "attn_q.weight" || rest == "attn_k.weight" ||
                     rest == "attn_q.bias" || rest == "attn_k.bias")) {
      const int64_t heads = rest.rfind("attn_q", 0) == 0 ? c.num_heads : c.num_kv_heads;
      unpermute_rope_rows(bytes.data(), heads, c.head_dim,
                          dtype_bytes(*type, shape.size() == 2 ? shape[1] : 1));
    }
    checked.write_bytes(name, bytes, *type);
  }
  checked.finish(rep);
  return rep;
}

// ---- Hugging Face ---------------------------------------------------------------------------

std::string read_chat_template(const fs::path& dir, const json& tok_config) {
  if (fs::exists(dir / "chat_template.jinja")) {
    std::ifstream in(dir / "chat_template.jinja");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  if (fs::exists(dir / "chat_template.json")) {
    json j = read_json_file(dir / "chat_template.json");
    if (j.contains("chat_template") && j["chat_template"].is_string()) return j["chat_template"];
  }
  auto it = tok_config.find("chat_template");
  if (it == tok_config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array())  // [{name, template}, ...]: the default one
    for (const json& t : *it)
      if (t.value("name", "") == "default") return t.value("template", "");
  return "";
}

ConvertReport convert_hf(const std::string& input, const std::string& output,
                         const ConvertOptions& opt) {
  const fs::path dir(input);
  TESSERA_CHECK(fs::exists(dir / "config.json"), input << ": no config.json (not a Hugging Face "
                                                          "checkpoint folder)");
  const json cfg = read_json_file(dir / "config.json");
  ConvertReport rep;
  rep.config = config_from_hf(cfg, (dir / "config.json").string());
  ModelConfig& c = rep.config;

  TESSERA_CHECK(fs::exists(dir / "tokenizer.json"),
                input << ": tokenizer.json is missing (tessera needs the model's tokenizer)");
  const json tok_json = read_json_file(dir / "tokenizer.json");
  json tok_config = fs::exists(dir / "tokenizer_config.json")
                        ? read_json_file(dir / "tokenizer_config.json")
                        : json::object();
  TokenizerData tok;
  try {
    tok = tokenizer_data_from_hf(tok_json, tok_config);
  } catch (const Error& e) {
    TESSERA_FAIL((dir / "tokenizer.json").string() << ": " << e.what());
  }
  tok.chat_template = read_chat_template(dir, tok_config);
  // End-of-generation ids: the config's and the generation config's eos ids (int or list).
  auto add_stops = [&](const json& j) {
    auto it = j.find("eos_token_id");
    if (it == j.end()) return;
    std::vector<int32_t> ids;
    if (it->is_number_integer()) ids.push_back(it->get<int32_t>());
    if (it->is_array())
      for (const json& v : *it) ids.push_back(v.get<int32_t>());
    for (int32_t id : ids)
      if (std::find(tok.stop_ids.begin(), tok.stop_ids.end(), id) == tok.stop_ids.end())
        tok.stop_ids.push_back(id);
  };
  add_stops(cfg);
  if (fs::exists(dir / "generation_config.json")) add_stops(read_json_file(dir / "generation_config.json"));

  Tokenizer{tok};  // refuse a tokenizer that cannot be built now, not at the first load

  SafetensorsCheckpoint ckpt = SafetensorsCheckpoint::open_dir(input);
  ModelWriter w(output);
  w.write_config(c, "huggingface:" + fs::weakly_canonical(fs::absolute(dir)).filename().string());
  w.write_tokenizer(tok);
  CheckedWriter checked(w, c, input, opt);
  const CheckpointQuantization quant = checkpoint_quantization(cfg, input);
  if (!quant.description.empty())
    rep.quantization = quant.description + (opt.dtype == "auto" && opt.quantize.empty()
                                                ? " kept as it is"
                                                : " decoded and stored as the options say");
  std::map<std::string, std::pair<float, bool>> kv_scales;  // canonical name: value, its own
  int64_t kv_scales_dropped = 0;
  for (const SafetensorsTensorInfo& t : ckpt.tensors()) {
    std::string name = t.name;
    if (name.rfind("model.", 0) == 0) name = name.substr(6);
    if (layer_suffix(name) == "self_attn.rotary_emb.inv_freq") continue;  // old checkpoints' buffer
    if (name == "lm_head.weight" && c.tie_word_embeddings) continue;       // a saved copy of the tie
    if (const std::vector<std::string> scales = kv_cache_scale_names(name); !scales.empty()) {
      const std::vector<float> v = ckpt.read_f32(t.name);
      if (v.size() != 1) {  // one per head (or another split): an FP8 cache takes one per layer
        ++kv_scales_dropped;
        continue;
      }
      TESSERA_CHECK(std::isfinite(v[0]) && v[0] > 0, input << ": the KV-cache scale '" << t.name
                                                           << "' must be a positive number, not "
                                                           << v[0]);
      // A layer's own key (value) scale wins over a kv_scale for both.
      for (const std::string& scale : scales) {
        checked.expect(scale, t.name, {1});  // (a name of this model's layers)
        auto [it, fresh] = kv_scales.try_emplace(scale, v[0], scales.size() == 1);
        if (!fresh && scales.size() == 1 && !it->second.second) it->second = {v[0], true};
      }
      continue;
    }
    std::string module;
    bool is_weight = false;
    if (quantized_module_tensor(ckpt, quant, t.name, module, is_weight)) {
      if (!is_weight) continue;  // (read with the module's weight)
      ImportedWeight q = import_quantized_weight(ckpt, quant, module);
      const std::string linear = module.rfind("model.", 0) == 0 ? module.substr(6) : module;
      checked.expect(linear + ".weight", t.name, {q.out_features, q.in_features});
      checked.write_bytes(linear + ".weight", q.bytes, q.dtype);
      if (!q.input_order.empty()) {
        checked.expect(linear + ".input_order", module + ".g_idx", {q.in_features});
        checked.write_as_is(linear + ".input_order", q.input_order.data(), DType::kI32);
      }
      continue;
    }
    checked.expect(name, t.name, t.shape);
    checked.write(name, ckpt.read_f32(t.name), t.dtype == "F16"    ? DType::kF16
                                               : t.dtype == "BF16" ? DType::kBF16
                                                                   : DType::kF32);
  }
  for (const auto& [name, value] : kv_scales) checked.write_as_is(name, &value.first, DType::kF32);
  checked.finish(rep);
  if (!kv_scales.empty())
    rep.kv_cache_scales = std::to_string(kv_scales.size()) + " KV-cache scales kept";
  if (kv_scales_dropped > 0)
    rep.kv_cache_scales += (kv_scales.empty() ? "" : ", ") + std::to_string(kv_scales_dropped) +
                           " KV-cache scale tensors of more than one number not kept (an FP8 "
                           "cache takes one per layer: it uses 1 there)";
  return rep;
}

}  // namespace

void unpermute_rope_rows(uint8_t* data, int64_t heads, int64_t head_dim, size_t row_bytes) {
  // GGUF row 2*i + p of a head came from Hugging Face row p * head_dim/2 + i.
  const int64_t half = head_dim / 2;
  std::vector<uint8_t> tmp(size_t(head_dim) * row_bytes);
  for (int64_t h = 0; h < heads; ++h) {
    uint8_t* block = data + size_t(h * head_dim) * row_bytes;
    for (int64_t i = 0; i < half; ++i)
      for (int64_t p = 0; p < 2; ++p)
        std::copy_n(block + size_t(2 * i + p) * row_bytes, row_bytes,
                    tmp.data() + size_t(p * half + i) * row_bytes);
    std::copy(tmp.begin(), tmp.end(), block);
  }
}

void check_quantize_scheme(const std::string& scheme, const std::string& option) {
  bool known = scheme == "q4_k_m";
  for (DType t : kQuantizedDTypes) known |= dtype_name(t) == scheme;
  TESSERA_CHECK(known, option << " must be q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, "
                              << "i4_g32, i4_g128, f8_e4m3 or q4_k_m, not '" << scheme << "'");
}

DType quantize_format(const std::string& scheme, const std::string& name, int64_t layers,
                      int64_t row, bool tied_embeddings) {
  DType want;
  if (scheme == "q4_k_m") {
    int64_t layer = -1;
    std::string rest;
    split_layer(name, "layers.", layer, rest);
    // llama.cpp's use_more_bits: the first and last eighth of the layers, and every third between
    const bool more_bits = layer >= 0 && (layer < layers / 8 || layer >= 7 * layers / 8 ||
                                          (layer - layers / 8) % 3 == 2);
    const bool head = name == "lm_head.weight" || (tied_embeddings && name == "embed_tokens.weight");
    const bool sensitive = rest == "self_attn.v_proj.weight" || rest == "mlp.down_proj.weight";
    want = head || (sensitive && more_bits) ? DType::kQ6_K : DType::kQ4_K;
  } else {
    check_quantize_scheme(scheme, "the quantization scheme");
    want = dtype_from_name(scheme);
  }
  if (row % dtype_block_elements(want) == 0) return want;
  switch (want) {  // the nearest format whose blocks fit
    case DType::kQ4_K: want = DType::kQ5_0; break;
    case DType::kQ5_K: want = DType::kQ5_1; break;
    case DType::kQ6_K: want = DType::kQ8_0; break;
    case DType::kI4G128: want = DType::kI4G32; break;
    default: return DType::kF16;
  }
  return row % dtype_block_elements(want) == 0 ? want : DType::kF16;
}

ModelConfig config_from_hf(const json& j, const std::string& where) {
  TESSERA_CHECK(j.is_object(), where << ": config is not a JSON object");
  TESSERA_CHECK(!j.contains("model_type") || j["model_type"].is_string(),
                where << ": model_type must be a string");
  const std::string type = get_or<std::string>(j, "model_type", "");
  TESSERA_CHECK(is_supported_architecture(type),
                where << ": architecture '" << (type.empty() ? "(none)" : type)
                      << "' is not supported (tessera runs llama, mistral and qwen2)");
  ModelConfig c;
  try {
    c.architecture = type;
    c.vocab_size = j.at("vocab_size");
    c.hidden_size = j.at("hidden_size");
    c.intermediate_size = j.at("intermediate_size");
    c.num_layers = j.at("num_hidden_layers");
    c.num_heads = j.at("num_attention_heads");
    c.num_kv_heads = get_or<int64_t>(j, "num_key_value_heads", c.num_heads);
    c.head_dim = get_or<int64_t>(j, "head_dim", c.num_heads ? c.hidden_size / c.num_heads : 0);
    c.max_position_embeddings = get_or<int64_t>(j, "max_position_embeddings", 4096);
    c.rms_norm_eps = get_or<float>(j, "rms_norm_eps", 1e-6f);
    c.rope_theta = get_or<float>(j, "rope_theta", 10000.0f);
    if (j.contains("rope_parameters") && j["rope_parameters"].is_object())  // transformers >= 5
      c.rope_theta = get_or<float>(j["rope_parameters"], "rope_theta", c.rope_theta);
    c.tie_word_embeddings = get_or<bool>(j, "tie_word_embeddings", false);
    // Qwen2 always has q/k/v biases; Llama's attention_bias puts one on o_proj too.
    c.attention_bias = type == "qwen2";
    TESSERA_CHECK(!get_or<bool>(j, "attention_bias", false),
                  where << ": attention_bias (biases on all four attention projections) is not supported");
    TESSERA_CHECK(!get_or<bool>(j, "mlp_bias", false), where << ": mlp_bias is not supported");
    const std::string act = get_or<std::string>(j, "hidden_act", "silu");
    TESSERA_CHECK(act == "silu", where << ": hidden_act '" << act << "' is not supported (silu is)");
    // Sliding-window attention equals full attention while the context fits the window, so the
    // context is capped at the window (Mistral v0.1: 4096 of 32768).
    const bool sliding = type == "qwen2" ? get_or<bool>(j, "use_sliding_window", false) : true;
    const int64_t window = sliding ? get_or<int64_t>(j, "sliding_window", 0) : 0;
    if (window > 0 && window < c.max_position_embeddings) c.max_position_embeddings = window;
    json rs = j.contains("rope_scaling") ? j["rope_scaling"] : json();
    if ((rs.is_null() || !rs.is_object()) && j.contains("rope_parameters")) rs = j["rope_parameters"];
    if (rs.is_object()) {
      const std::string rt = rs.contains("rope_type") ? rs["rope_type"].get<std::string>()
                                                      : get_or<std::string>(rs, "type", "default");
      if (rt == "llama3") {
        c.rope_scaling.type = ops::RopeScaling::Type::kLlama3;
        c.rope_scaling.factor = rs.at("factor");
        c.rope_scaling.low_freq_factor = rs.at("low_freq_factor");
        c.rope_scaling.high_freq_factor = rs.at("high_freq_factor");
        c.rope_scaling.original_max_position = rs.at("original_max_position_embeddings");
      } else if (rt == "linear") {
        c.rope_scaling.type = ops::RopeScaling::Type::kLinear;
        c.rope_scaling.factor = rs.at("factor");
      } else {
        TESSERA_CHECK(rt == "default", where << ": rope scaling '" << rt << "' is not supported");
      }
    }
  } catch (const json::exception& e) {
    TESSERA_FAIL(where << ": " << e.what());
  }
  try {
    c.validate();
  } catch (const Error& e) {
    TESSERA_FAIL(where << ": " << e.what());
  }
  return c;
}

ModelConfig config_from_gguf(const json& md, const std::string& where) {
  TESSERA_CHECK(!md.contains("general.architecture") || md["general.architecture"].is_string(),
                where << ": general.architecture must be a string");
  const std::string arch = md.value("general.architecture", "");
  TESSERA_CHECK(arch == "llama" || arch == "qwen2",
                where << ": architecture '" << (arch.empty() ? "(none)" : arch)
                      << "' is not supported (tessera runs llama, mistral and qwen2)");
  auto key = [&](const std::string& k) { return arch + "." + k; };
  auto need = [&](const std::string& k) -> const json& {
    auto it = md.find(key(k));
    TESSERA_CHECK(it != md.end(), where << ": metadata " << key(k) << " is missing");
    return *it;
  };
  ModelConfig c;
  try {
    c.architecture = arch;
    c.num_layers = need("block_count");
    c.hidden_size = need("embedding_length");
    c.intermediate_size = need("feed_forward_length");
    c.num_heads = need("attention.head_count");
    c.num_kv_heads = md.value(key("attention.head_count_kv"), c.num_heads);
    TESSERA_CHECK(c.num_heads > 0, where << ": " << key("attention.head_count") << " must be positive");
    c.head_dim = md.value(key("attention.key_length"), c.hidden_size / c.num_heads);
    c.max_position_embeddings = md.value(key("context_length"), int64_t(4096));
    c.rms_norm_eps = md.value(key("attention.layer_norm_rms_epsilon"), 1e-5f);
    c.rope_theta = md.value(key("rope.freq_base"), 10000.0f);
    const int64_t rot = md.value(key("rope.dimension_count"), c.head_dim);
    TESSERA_CHECK(rot == c.head_dim, where << ": partial rotary embeddings (" << rot << " of "
                                           << c.head_dim << " dimensions) are not supported");
    const std::string scaling = md.value(key("rope.scaling.type"), std::string("none"));
    if (scaling == "linear") {
      c.rope_scaling.type = ops::RopeScaling::Type::kLinear;
      c.rope_scaling.factor = md.value(key("rope.scaling.factor"), 1.0f);
    } else {
      TESSERA_CHECK(scaling == "none", where << ": rope scaling '" << scaling << "' is not supported");
    }
    if (md.contains("tokenizer.ggml.tokens")) c.vocab_size = int64_t(md["tokenizer.ggml.tokens"].size());
    c.vocab_size = md.value(key("vocab_size"), c.vocab_size);
  } catch (const json::exception& e) {
    TESSERA_FAIL(where << ": bad metadata: " << e.what());
  }
  return c;
}

TokenizerData tokenizer_from_gguf(const json& md, const std::string& where) {
  TESSERA_CHECK(md.contains("tokenizer.ggml.model") && md.contains("tokenizer.ggml.tokens"),
                where << ": the file has no tokenizer (tokenizer.ggml.model / tokens missing)");
  TokenizerData t;
  try {
    const std::string model = md["tokenizer.ggml.model"];
    if (model == "gpt2") {
      t.model = "bpe_byte";
      t.pre = pre_tokenizer_from_gguf(md.value("tokenizer.ggml.pre", std::string("default")));
      t.add_bos = md.value("tokenizer.ggml.add_bos_token", false);
    } else if (model == "llama") {
      t.model = "bpe_sp";
      t.add_bos = md.value("tokenizer.ggml.add_bos_token", true);
      t.add_space_prefix = md.value("tokenizer.ggml.add_space_prefix", true);
    } else {
      TESSERA_FAIL(where << ": tokenizer model '" << model
                         << "' is not supported (gpt2-style byte BPE and llama SentencePiece are)");
    }
    t.tokens = md["tokenizer.ggml.tokens"].get<std::vector<std::string>>();
    if (md.contains("tokenizer.ggml.scores")) t.scores = md["tokenizer.ggml.scores"].get<std::vector<float>>();
    if (md.contains("tokenizer.ggml.token_type"))
      t.token_types = md["tokenizer.ggml.token_type"].get<std::vector<int32_t>>();
    if (md.contains("tokenizer.ggml.merges"))
      t.merges = md["tokenizer.ggml.merges"].get<std::vector<std::string>>();
    t.bos_id = md.value("tokenizer.ggml.bos_token_id", -1);
    t.eos_id = md.value("tokenizer.ggml.eos_token_id", -1);
    t.unk_id = md.value("tokenizer.ggml.unknown_token_id", -1);
    t.pad_id = md.value("tokenizer.ggml.padding_token_id", -1);
    t.add_eos = md.value("tokenizer.ggml.add_eos_token", false);
    t.chat_template = md.value("tokenizer.chat_template", std::string());
    for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                          "tokenizer.ggml.eom_token_id"}) {
      const int32_t id = md.value(k, -1);
      if (id >= 0 && std::find(t.stop_ids.begin(), t.stop_ids.end(), id) == t.stop_ids.end())
        t.stop_ids.push_back(id);
    }
  } catch (const json::exception& e) {
    TESSERA_FAIL(where << ": bad tokenizer metadata: " << e.what());
  }
  const int32_t n = int32_t(t.tokens.size());
  for (int32_t id : {t.bos_id, t.eos_id})
    TESSERA_CHECK(id < n, where << ": special token id " << id << " is outside the vocabulary ("
                                << n << " tokens)");
  return t;
}

ConvertReport convert_model(const std::string& input, const std::string& output,
                            const ConvertOptions& options) {
  TESSERA_CHECK(fs::exists(input), input << ": no such file or folder");
  stored_dtype(options.dtype, DType::kF32);  // validates the options before any work
  if (!options.quantize.empty()) check_quantize_scheme(options.quantize, "--quantize");
  ConvertReport rep;
  try {
    rep = fs::is_directory(input) ? convert_hf(input, output, options)
                                  : convert_gguf(input, output, options);
  } catch (const nlohmann::json::exception& e) {  // a field of the wrong type somewhere
    TESSERA_FAIL(input << ": unexpected metadata: " << e.what());
  }
  report(options, "wrote " + output + " (" + std::to_string(rep.tensors) + " tensors, " +
                      std::to_string(rep.bytes_written / 1000000) + " MB" +
                      (rep.quantization.empty() ? "" : "; " + rep.quantization) +
                      (rep.kv_cache_scales.empty() ? "" : "; " + rep.kv_cache_scales) + ")");
  return rep;
}

}  // namespace tessera
