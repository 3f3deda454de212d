#include "runtime/generator.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace tessera {
namespace {

// One sequence at a time: a pool of max_kv_rows tokens per rank, or the whole window.
EngineOptions one_sequence(const LlamaModel& model, EngineOptions o, int64_t max_kv_rows = 0) {
  SchedulerOptions& s = o.scheduler;
  s.max_sequences = 1;
  if (max_kv_rows > 0) s.num_blocks = max_kv_rows / s.block_size;
  if (s.num_blocks == 0)
    s.num_blocks = (model.config().context_window(o.max_context) + s.block_size - 1) / s.block_size;
  return o;
}

EngineOptions options_for(const LlamaModel& model, int64_t max_context, int64_t max_kv_rows) {
  EngineOptions o;
  o.max_context = max_context;
  return one_sequence(model, o, max_kv_rows);
}

// The leader's result to every rank of the replica: across stage 0's TP and SP groups, then down
// the pipeline.
void share(const LlamaModel& model, GenerationResult& r) {
  std::string bytes;
  if (model.stage().first() && model.shard().tp_rank == 0 && model.shard().sp_rank == 0)
    bytes = nlohmann::json{{"tokens", r.tokens},
                           {"text", r.text},
                           {"finish_reason", r.finish_reason},
                           {"prompt_tokens", r.prompt_tokens},
                           {"prefill_seconds", r.prefill_seconds},
                           {"decode_seconds", r.decode_seconds}}
                .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (model.stage().first()) {
    if (model.shard().sp_rank == 0) model.tp().broadcast_bytes(bytes, 0);
    if (model.sp()) model.sp()->broadcast_bytes(bytes, 0);
  }
  model.stage().broadcast_from_first(bytes);
  const nlohmann::json j = nlohmann::json::parse(bytes);
  r.tokens = j["tokens"].get<std::vector<int32_t>>();
  r.text = j["text"].get<std::string>();
  r.finish_reason = j["finish_reason"].get<std::string>();
  r.prompt_tokens = j["prompt_tokens"].get<int64_t>();
  r.prefill_seconds = j["prefill_seconds"].get<double>();
  r.decode_seconds = j["decode_seconds"].get<double>();
}

}  // namespace

Generator::Generator(const LlamaModel& model, const Tokenizer& tokenizer, int64_t max_context,
                     int64_t max_kv_rows)
    : model_(model),
      tokenizer_(tokenizer),
      options_(options_for(model, max_context, max_kv_rows)),
      engine_(std::make_unique<Engine>(model, tokenizer, options_)) {}

Generator::Generator(const LlamaModel& model, const Tokenizer& tokenizer,
                     const EngineOptions& options)
    : model_(model),
      tokenizer_(tokenizer),
      options_(one_sequence(model, options)),
      engine_(std::make_unique<Engine>(model, tokenizer, options_)) {}

void Generator::set_prefill_microbatch(int64_t tokens) {
  options_.scheduler.prefill_chunk = tokens;
  engine_ = std::make_unique<Engine>(model_, tokenizer_, options_);
}

GenerationResult Generator::generate(const GenerationRequest& request,
                                     const std::function<void(const std::string&)>& on_text) {
  engine_->check_fits(request);  // on every rank: a bad request fails everywhere, before any step
  if (engine_->leader()) {
    Engine::TextCallback text;
    if (on_text) text = [&on_text](const std::string& t, const GenerationResult&) { on_text(t); };
    engine_->submit(request, text);
  }
  std::vector<GenerationResult> results = engine_->run();
  GenerationResult r = results.empty() ? GenerationResult{} : std::move(results[0]);
  share(model_, r);
  return r;
}

}  // namespace tessera
