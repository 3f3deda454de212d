// TokenizerData from a Hugging Face tokenizer.json (+ tokenizer_config.json).
#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "kernels/error.h"

namespace tessera {

namespace {

using json = nlohmann::json;

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581
constexpr std::string_view kLlama3Regex =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
constexpr std::string_view kQwen2Regex =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
// Tokens that end a generation when the vocabulary has them as control tokens (as llama.cpp).
constexpr std::string_view kEndOfGeneration[] = {
    "<|endoftext|>",   "<|im_end|>",    "<|eot_id|>", "<|eom_id|>",
    "<|end_of_text|>", "<end_of_turn>", "<|end|>",    "</s>"};

// obj[key] when present and not null.
const json* field(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return (it == obj.end() || it->is_null()) ? nullptr : &*it;
}

std::string str_field(const json& obj, const char* key, const std::string& fallback = "") {
  const json* v = field(obj, key);
  return (v && v->is_string()) ? v->get<std::string>() : fallback;
}

bool bool_field(const json& obj, const char* key, bool fallback) {
  const json* v = field(obj, key);
  return (v && v->is_boolean()) ? v->get<bool>() : fallback;
}

std::string type_of(const json& obj) {
  return str_field(obj, "type", "?");
}

std::string brief(const json& j) {
  std::string s = j.dump();
  return s.size() > 300 ? s.substr(0, 300) + "..." : s;
}

// ByteLevel with add_prefix_space false and the given use_regex.
bool is_byte_level(const json& p, bool use_regex) {
  if (type_of(p) != "ByteLevel") return false;
  TESSERA_CHECK(!bool_field(p, "add_prefix_space", true),
                "tokenizer.json: ByteLevel with add_prefix_space=true is not supported");
  return bool_field(p, "use_regex", true) == use_regex;
}

// The TokenizerData::pre of a byte-level BPE's pre_tokenizer.
std::string byte_level_pre(const json& p) {
  TESSERA_CHECK(!p.is_null(),
                "tokenizer.json: a byte-level BPE without a pre_tokenizer is not "
                "supported");
  if (is_byte_level(p, true)) return "gpt2";
  const json* seq = type_of(p) == "Sequence" ? field(p, "pretokenizers") : nullptr;
  if (seq && seq->is_array() && seq->size() == 2) {
    const json& a = (*seq)[0];
    const json& b = (*seq)[1];
    if (type_of(a) == "Digits" && bool_field(a, "individual_digits", false) &&
        is_byte_level(b, true))
      return "smollm";
    if (type_of(a) == "Split" && is_byte_level(b, false) &&
        str_field(a, "behavior") == "Isolated" && !bool_field(a, "invert", false)) {
      const json* pat = field(a, "pattern");
      const std::string re = pat ? str_field(*pat, "Regex") : "";
      if (re == kLlama3Regex) return "llama3";
      if (re == kQwen2Regex) return "qwen2";
    }
  }
  TESSERA_FAIL(
      "tokenizer.json: pre_tokenizer not understood (supported: ByteLevel; "
      "Sequence[Digits(individual_digits), ByteLevel]; Sequence[Split(Llama-3 or Qwen2 "
      "regex), ByteLevel(use_regex=false)]): "
      << brief(p));
}

// bpe_sp: normalizer Prepend("▁") + Replace(" ", "▁"), or the Metaspace pre-tokenizer.
bool sentencepiece_space_prefix(const json& normalizer, const json& pre) {
  bool prepend = false, replace = false;
  const auto visit = [&](const json& n, auto&& self) -> void {
    if (n.is_null()) return;
    const std::string t = type_of(n);
    if (t == "Sequence" && field(n, "normalizers")) {
      for (const json& c : n["normalizers"]) self(c, self);
    } else if (t == "Prepend" && str_field(n, "prepend") == kSpaceMark) {
      prepend = true;
    } else if (t == "Replace" && field(n, "pattern") && str_field(n["pattern"], "String") == " " &&
               str_field(n, "content") == kSpaceMark) {
      replace = true;
    } else {
      TESSERA_FAIL(
          "tokenizer.json: normalizer not understood for a byte-fallback BPE "
          "(supported: Prepend(\"\u2581\"), Replace(\" \", \"\u2581\")): "
          << brief(n));
    }
  };
  visit(normalizer, visit);
  if (pre.is_null()) {
    TESSERA_CHECK(replace,
                  "tokenizer.json: a byte-fallback BPE must turn spaces into \u2581 "
                  "(a Replace normalizer or the Metaspace pre-tokenizer)");
    return prepend;
  }
  TESSERA_CHECK(type_of(pre) == "Metaspace" && !prepend && !replace &&
                    str_field(pre, "replacement", std::string(kSpaceMark)) == kSpaceMark,
                "tokenizer.json: pre_tokenizer not understood for a byte-fallback BPE "
                "(supported: none, or Metaspace(\"\u2581\") without a normalizer): "
                    << brief(pre));
  const std::string scheme = str_field(pre, "prepend_scheme");
  if (scheme.empty()) return bool_field(pre, "add_prefix_space", true);
  TESSERA_CHECK(scheme == "always" || scheme == "first" || scheme == "never",
                "tokenizer.json: Metaspace prepend_scheme '" << scheme << "' not understood");
  return scheme != "never";
}

// A token named in tokenizer_config.json: "text" or {"content": "text", ...}.
std::string config_token(const json& config, const char* key) {
  const json* v = field(config, key);
  if (!v) return "";
  if (v->is_string()) return v->get<std::string>();
  return str_field(*v, "content");
}

struct PostProcessor {
  int32_t prefix = -1, suffix = -1;  // the special token added before / after the text
  bool templated = false;
};

void read_post_processor(const json& p, PostProcessor* out) {
  if (p.is_null()) return;
  const std::string t = type_of(p);
  if (t == "ByteLevel") return;  // offsets only
  if (t == "Sequence" && field(p, "processors")) {
    for (const json& c : p["processors"]) read_post_processor(c, out);
    return;
  }
  TESSERA_CHECK(t == "TemplateProcessing" && field(p, "single") && p["single"].is_array(),
                "tokenizer.json: post_processor not understood (supported: ByteLevel, "
                "TemplateProcessing): "
                    << brief(p));
  out->templated = true;
  std::vector<int32_t> before, after;
  bool seen_text = false;
  for (const json& item : p["single"]) {
    if (field(item, "Sequence")) {
      seen_text = true;
      continue;
    }
    const json* sp = field(item, "SpecialToken");
    TESSERA_CHECK(sp, "tokenizer.json: TemplateProcessing item not understood: " << brief(item));
    const std::string name = str_field(*sp, "id");
    const json* specials = field(p, "special_tokens");
    const json* entry = specials ? field(*specials, name.c_str()) : nullptr;
    const json* ids = entry ? field(*entry, "ids") : nullptr;
    TESSERA_CHECK(
        ids && ids->is_array() && ids->size() == 1,
        "tokenizer.json: TemplateProcessing special token '" << name << "' has no single id");
    (seen_text ? after : before).push_back((*ids)[0].get<int32_t>());
  }
  TESSERA_CHECK(before.size() <= 1 && after.size() <= 1,
                "tokenizer.json: TemplateProcessing adds more than one token before or after the "
                "text: "
                    << brief(p["single"]));
  if (!before.empty()) out->prefix = before[0];
  if (!after.empty()) out->suffix = after[0];
}

}  // namespace

TokenizerData tokenizer_data_from_hf(const json& tj, const json& config) {
  TESSERA_CHECK(tj.is_object(), "tokenizer.json: expected a JSON object");
  const json* model = field(tj, "model");
  TESSERA_CHECK(model && model->is_object(), "tokenizer.json: no 'model'");
  const std::string mtype = str_field(*model, "type", "BPE");
  TESSERA_CHECK(mtype == "BPE",
                "tokenizer.json: model type '" << mtype << "' is not supported (only BPE)");
  TESSERA_CHECK(!field(*model, "dropout") || (*model)["dropout"].get<double>() == 0.0,
                "tokenizer.json: BPE dropout is not supported");
  TESSERA_CHECK(str_field(*model, "continuing_subword_prefix").empty() &&
                    str_field(*model, "end_of_word_suffix").empty(),
                "tokenizer.json: BPE continuing_subword_prefix / end_of_word_suffix are not "
                "supported");
  const json null_json;
  const json& normalizer = field(tj, "normalizer") ? tj["normalizer"] : null_json;
  const json& pre = field(tj, "pre_tokenizer") ? tj["pre_tokenizer"] : null_json;

  TokenizerData d;
  const bool byte_fallback = bool_field(*model, "byte_fallback", false);
  if (byte_fallback) {
    d.model = "bpe_sp";
    d.add_space_prefix = sentencepiece_space_prefix(normalizer, pre);
  } else {
    d.model = "bpe_byte";
    d.pre = byte_level_pre(pre);
    bool nfc = false;
    if (!normalizer.is_null()) {
      const std::string t = type_of(normalizer);
      nfc = t == "NFC" || (t == "Sequence" && field(normalizer, "normalizers") &&
                           normalizer["normalizers"].size() == 1 &&
                           type_of(normalizer["normalizers"][0]) == "NFC");
      TESSERA_CHECK(nfc,
                    "tokenizer.json: normalizer not understood for a byte-level BPE "
                    "(supported: none; NFC with the Qwen2 pre-tokenizer): "
                        << brief(normalizer));
    }
    TESSERA_CHECK(!nfc || d.pre == "qwen2",
                  "tokenizer.json: the NFC normalizer is only "
                  "supported with the Qwen2 pre-tokenizer, not with '"
                      << d.pre << "'");
    TESSERA_CHECK(!bool_field(*model, "ignore_merges", false) || d.pre == "llama3",
                  "tokenizer.json: ignore_merges is only supported with the Llama-3 "
                  "pre-tokenizer, not with '"
                      << d.pre << "'");
  }

  // Vocabulary: the model's, then the added tokens (which win where both name an id).
  const json* vocab = field(*model, "vocab");
  TESSERA_CHECK(vocab && vocab->is_object() && !vocab->empty(),
                "tokenizer.json: model.vocab is missing or empty");
  const json* added = field(tj, "added_tokens");
  int64_t n = 0;
  for (const auto& [text, id] : vocab->items()) {
    TESSERA_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0,
                  "tokenizer.json: vocab entry '" << text << "' has a bad id " << id.dump());
    n = std::max(n, id.get<int64_t>() + 1);
  }
  if (added) {
    for (const json& a : *added) {
      TESSERA_CHECK(field(a, "id") && a["id"].is_number_integer() && a["id"].get<int64_t>() >= 0 &&
                        field(a, "content") && a["content"].is_string(),
                    "tokenizer.json: added token not understood: " << brief(a));
      n = std::max(n, a["id"].get<int64_t>() + 1);
    }
  }
  TESSERA_CHECK(n < int64_t(INT32_MAX), "tokenizer.json: token ids are too large");
  d.tokens.assign(size_t(n), "");
  d.token_types.assign(size_t(n), kTokenUnused);  // ids nobody names stay unused
  for (const auto& [text, id] : vocab->items()) {
    const size_t i = size_t(id.get<int64_t>());
    d.tokens[i] = text;
    d.token_types[i] = kTokenNormal;
    if (byte_fallback && text.size() == 6 && text.compare(0, 3, "<0x") == 0 && text[5] == '>')
      d.token_types[i] = kTokenByte;
  }
  if (added) {
    for (const json& a : *added) {
      const size_t i = size_t(a["id"].get<int64_t>());
      d.tokens[i] = a["content"].get<std::string>();
      d.token_types[i] = bool_field(a, "special", false) ? kTokenControl : kTokenUserDefined;
    }
  }
  const auto id_of = [&](const std::string& text) -> int32_t {
    if (text.empty()) return -1;
    if (added)
      for (const json& a : *added)
        if (a["content"] == text) return a["id"].get<int32_t>();
    auto it = vocab->find(text);
    return it == vocab->end() ? -1 : it->get<int32_t>();
  };

  // Merges: "a b" strings, or [a, b] pairs in newer files.
  if (const json* merges = field(*model, "merges")) {
    d.merges.reserve(merges->size());
    for (const json& m : *merges) {
      if (m.is_string()) {
        d.merges.push_back(m.get<std::string>());
      } else {
        TESSERA_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                      "tokenizer.json: merge not understood: " << brief(m));
        d.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      }
    }
  }

  // Special ids: the model's unk token, the post-processor's BOS/EOS, tokenizer_config.json.
  if (const std::string unk = str_field(*model, "unk_token"); !unk.empty()) {
    d.unk_id = id_of(unk);
    TESSERA_CHECK(d.unk_id >= 0, "tokenizer.json: unk_token '" << unk << "' is not a token");
    d.token_types[size_t(d.unk_id)] = kTokenUnknown;
  }
  PostProcessor post;
  if (const json* p = field(tj, "post_processor")) read_post_processor(*p, &post);
  d.bos_id = id_of(config_token(config, "bos_token"));
  d.eos_id = id_of(config_token(config, "eos_token"));
  d.pad_id = id_of(config_token(config, "pad_token"));
  if (post.templated) {
    d.add_bos = post.prefix >= 0;
    d.add_eos = post.suffix >= 0;
    if (post.prefix >= 0) d.bos_id = post.prefix;
    if (post.suffix >= 0) {
      TESSERA_CHECK(d.eos_id < 0 || d.eos_id == post.suffix,
                    "tokenizer.json appends token "
                        << post.suffix << " but tokenizer_config.json's eos is " << d.eos_id);
      d.eos_id = post.suffix;
    }
  } else {
    d.add_bos = bool_field(config, "add_bos_token", false) && d.bos_id >= 0;
    d.add_eos = bool_field(config, "add_eos_token", false) && d.eos_id >= 0;
  }
  if (d.eos_id >= 0) d.stop_ids.push_back(d.eos_id);
  for (std::string_view name : kEndOfGeneration) {
    const int32_t id = id_of(std::string(name));
    if (id >= 0 && id != d.eos_id && d.token_types[size_t(id)] == kTokenControl)
      d.stop_ids.push_back(id);
  }

  if (const json* t = field(config, "chat_template")) {
    if (t->is_string()) {
      d.chat_template = t->get<std::string>();
    } else if (t->is_array()) {  // [{name, template}]: the default one, else the first
      for (const json& e : *t)
        if (d.chat_template.empty() || str_field(e, "name") == "default")
          d.chat_template = str_field(e, "template");
    }
  }
  return d;
}

}  // namespace tessera
