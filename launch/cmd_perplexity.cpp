// tessera perplexity: how well a model predicts a text (teacher forcing), on any layout. Every
// position's log-probability of the text's next token comes from one forward pass over the text
// (a prefill), or, with --decode-steps, from feeding the text one token per step as decoding does
// (the decode kernels: on the CPU, quantized weights against int16 activation blocks). Prints the
// perplexity exp(mean negative log-likelihood); --predictions writes each position's most likely
// token and the next token's log-probability, so that two models (or layouts, or formats) can be
// compared position by position.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "launch/commands.h"
#include "launch/model_run.h"
#include "runtime/model_runner.h"
#include "runtime/single_sequence.h"

namespace tessera::cli {
namespace {

// Row `row` of logits (rows, vocab): its argmax and the log-softmax at `target`.
void score(const float* row, int64_t vocab, int32_t target, int32_t& argmax, double& logprob) {
  int64_t best = 0;
  for (int64_t v = 1; v < vocab; ++v)
    if (row[v] > row[best]) best = v;
  const double mx = row[best];
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - mx);
  argmax = int32_t(best);
  logprob = double(row[target]) - mx - std::log(sum);
}

}  // namespace

int run_perplexity(const Args& args) {
  po::options_description desc("Options");
  ModelRunOptions run_options;
  std::string text_file, text, predictions;
  int64_t max_tokens = 0;
  desc.add_options()
      ("text-file,f", po::value(&text_file), "the text to score (UTF-8)")
      ("text", po::value(&text), "the text to score, given inline")
      ("tokens", po::value(&max_tokens)->default_value(0),
       "score only the text's first N tokens (0: all of them, up to the context window)")
      ("decode-steps", po::bool_switch(),
       "feed the text one token per step, as decoding does, instead of in one prefill")
      ("predictions", po::value(&predictions),
       "write a JSON file with the tokens, each position's most likely next token and the "
       "log-probability of the actual one");
  run_options.add_to(desc);
  po::variables_map vm;
  if (!parse_options("perplexity", "--model FILE (--text-file FILE | --text TEXT) [--decode-steps]",
                     desc, args, vm))
    return 0;
  TESSERA_CHECK(vm.count("text-file") + vm.count("text") == 1,
                "tessera perplexity: give either --text-file or --text");
  TESSERA_CHECK(run_options.layout.dp == 1, "tessera perplexity scores one text: --dp must be 1");
  TESSERA_CHECK(max_tokens >= 0, "--tokens must be >= 0");
  if (!text_file.empty()) {
    std::ifstream in(text_file, std::ios::binary);
    TESSERA_CHECK(in, text_file << ": cannot open");
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  ModelRun run = ModelRun::start(run_options, vm);
  const LlamaModel& model = *run.bundle.model;
  std::vector<int32_t> tokens = run.bundle.tokenizer->encode(text, true, false);
  const int64_t window = model.config().context_window(run_options.max_context);
  const int64_t keep = std::min<int64_t>(max_tokens > 0 ? max_tokens : window, window);
  if (int64_t(tokens.size()) > keep) tokens.resize(size_t(keep));
  TESSERA_CHECK(tokens.size() >= 2, "the text is " << tokens.size()
                                                   << " token(s): nothing to predict");
  const bool decode_steps = vm["decode-steps"].as<bool>();
  TESSERA_CHECK(decode_steps || run_options.layout.sp == 1,
                "with --sp, tessera perplexity needs --decode-steps (a sequence-parallel prompt "
                "gives the logits of its last token only)");

  RunnerOptions o;
  o.kv_dtype = run_options.engine.kv_dtype;  // (--kv-cache-dtype)
  o.num_blocks = (int64_t(tokens.size()) + o.block_size - 1) / o.block_size + 1;
  ModelRunner runner(model, o);
  SingleSequence sequence(runner);
  const int64_t n = int64_t(tokens.size()) - 1;  // positions that predict a next token
  const int64_t vocab = model.config().vocab_size;
  std::vector<int32_t> argmax(static_cast<size_t>(n));
  std::vector<double> logprob(static_cast<size_t>(n));
  const bool last = model.stage().last();
  const auto score_rows = [&](const Tensor& local, int64_t first_position) {
    if (!last) return;
    const Tensor all = gather_vocab_shards(local, model.tp());
    for (int64_t r = 0; r < all.dim(0) && first_position + r < n; ++r) {
      const int64_t p = first_position + r;
      score(all.data<float>() + r * vocab, vocab, tokens[size_t(p + 1)], argmax[size_t(p)],
            logprob[size_t(p)]);
    }
  };
  if (decode_steps) {
    for (int64_t p = 0; p < n; ++p) score_rows(sequence.feed({tokens[size_t(p)]}, 1), p);
  } else {
    score_rows(sequence.feed(std::vector<int32_t>(tokens.begin(), tokens.end() - 1), -1), 0);
  }

  // The last stage's first rank has the scores: it tells every rank (rank 0 reports).
  const GridShape& g = run.groups.shape;
  const int scorer = (g.pp - 1) * g.tp * g.sp;  // (dp 0, the last stage, sp 0, tp 0)
  std::string bytes;
  if (run.groups.world->rank() == scorer)
    bytes = nlohmann::json{{"argmax", argmax}, {"logprob", logprob}}.dump();
  run.groups.world->broadcast_bytes(bytes, scorer);
  if (!run.rank0) return 0;
  const nlohmann::json scores = nlohmann::json::parse(bytes);
  double nll = 0;
  for (double lp : scores["logprob"]) nll -= lp;
  nll /= double(n);
  std::printf("perplexity %.4f over %lld predictions (mean negative log-likelihood %.5f, %s)\n",
              std::exp(nll), (long long)n, nll, decode_steps ? "one token per step" : "one prefill");
  if (!predictions.empty()) {
    std::ofstream out(predictions);
    TESSERA_CHECK(out, predictions << ": cannot write");
    out << nlohmann::json{{"tokens", tokens},
                          {"argmax", scores["argmax"]},
                          {"logprob", scores["logprob"]},
                          {"perplexity", std::exp(nll)}}
               .dump()
        << "\n";
  }
  return 0;
}

}  // namespace tessera::cli
