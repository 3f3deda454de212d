// tessera inspect: a model file's configuration, tokenizer and tensor table.
#include <cstdio>
#include <map>
#include <string>

#include "io/model_store.h"
#include "launch/options.h"

namespace tessera::cli {

int run_inspect(const Args& args) {
  po::options_description desc("Options");
  std::string path;
  desc.add_options()("model,m", po::value(&path)->required(), "model file (.h5)")(
      "verify", po::bool_switch(), "read every tensor, verifying each chunk's checksum");
  po::positional_options_description pos;
  pos.add("model", 1);
  po::variables_map vm;
  if (!parse_options("inspect", "FILE [--verify]", desc, args, vm, &pos)) return 0;

  ModelReader r(path);
  const ModelConfig& c = r.config();
  const char* rope = rope_scaling_name(c.rope_scaling.type);
  std::printf("file:                %s\n", path.c_str());
  std::printf("source:              %s\n", r.source().c_str());
  std::printf("architecture:        %s\n", c.architecture.c_str());
  std::printf("layers:              %lld\n", (long long)c.num_layers);
  std::printf("hidden size:         %lld\n", (long long)c.hidden_size);
  std::printf("ffn size:            %lld\n", (long long)c.intermediate_size);
  std::printf("heads (query/kv):    %lld / %lld, head_dim %lld\n", (long long)c.num_heads,
              (long long)c.num_kv_heads, (long long)c.head_dim);
  std::printf("vocab size:          %lld\n", (long long)c.vocab_size);
  std::printf("context window:      %lld\n", (long long)c.max_position_embeddings);
  std::printf("rms_norm_eps:        %g\n", double(c.rms_norm_eps));
  std::printf("rope:                theta %g, scaling %s (factor %g)\n", double(c.rope_theta), rope,
              double(c.rope_scaling.factor));
  std::printf("tied embeddings:     %s\n", c.tie_word_embeddings ? "yes" : "no");
  std::printf("q/k/v bias:          %s\n", c.attention_bias ? "yes" : "no");
  const TokenizerData t = r.read_tokenizer();
  std::printf("tokenizer:           %s%s%s, %zu tokens, %zu merges, bos %d, eos %d, chat template %s\n",
              t.model.c_str(), t.pre.empty() ? "" : " / ", t.pre.c_str(), t.tokens.size(),
              t.merges.size(), t.bos_id, t.eos_id, t.chat_template.empty() ? "no" : "yes");
  std::printf("\n%-48s %-16s %-6s %12s\n", "tensor", "shape", "format", "bytes");
  uint64_t total = 0, params = 0;
  std::map<std::string, uint64_t> by_format;  // parameters
  const bool verify = vm["verify"].as<bool>();
  for (const WeightInfo& w : r.weights()) {
    const uint64_t bytes = w.bytes();
    total += bytes;
    params += uint64_t(shape_numel(w.shape));
    by_format[std::string(dtype_name(w.dtype))] += uint64_t(shape_numel(w.shape));
    std::printf("%-48s %-16s %-6s %12llu\n", w.name.c_str(), shape_str(w.shape).c_str(),
                std::string(dtype_name(w.dtype)).c_str(), (unsigned long long)bytes);
    if (verify) r.read_weight_slice(w.name, 0, w.shape[0], 0, w.shape.size() == 2 ? w.shape[1] : 0,
                                    ModelReader::As::kStored);
  }
  std::printf("\n%zu tensors, %.2f M parameters, %.1f MB, %.2f bits per weight\n",
              r.weights().size(), double(params) / 1e6, double(total) / 1e6,
              params ? 8.0 * double(total) / double(params) : 0.0);
  std::printf("formats:");
  for (const auto& [format, n] : by_format)
    std::printf(" %s %.1f%%", format.c_str(), 100.0 * double(n) / double(params));
  std::printf(" (of the parameters)\n");
  if (verify) std::printf("verified: every chunk checksum matches\n");
  return 0;
}

}  // namespace tessera::cli
