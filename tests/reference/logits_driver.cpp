// Test driver for the reference-parity scripts: runs a prompt through a tessera model file and
// greedy-decodes N steps, writing every logit row it produced.
//   logits_driver MODEL.h5 IDS(comma-separated) STEPS OUT.bin
// OUT.bin: float32 rows (prompt_len + STEPS rows of vocab), stdout: {"tokens": [...]} (JSON).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "runtime/model_bundle.h"
#include "runtime/sampler.h"
#include "runtime/single_sequence.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: logits_driver MODEL.h5 IDS STEPS OUT.bin\n";
    return 2;
  }
  try {
    auto groups = tessera::ProcessGroups::single();
    auto bundle = tessera::ModelBundle::load(argv[1], groups);
    std::vector<int32_t> ids;
    std::stringstream ss(argv[2]);
    for (std::string tok; std::getline(ss, tok, ',');) ids.push_back(std::stoi(tok));
    const int steps = std::stoi(argv[3]);
    const auto& cfg = bundle.model->config();
    tessera::RunnerOptions o;
    o.num_blocks = (int64_t(ids.size()) + steps + o.block_size) / o.block_size;
    tessera::ModelRunner runner(*bundle.model, o);
    tessera::SingleSequence sequence(runner);
    std::ofstream out(argv[4], std::ios::binary);
    tessera::Sampler greedy(tessera::SamplingParams{});
    tessera::Tensor logits = sequence.feed(ids, -1);
    std::vector<int32_t> generated;
    for (int s = 0;; ++s) {
      out.write(static_cast<const char*>(logits.raw()), std::streamsize(logits.nbytes()));
      const float* last = logits.data<float>() + (logits.dim(0) - 1) * cfg.vocab_size;
      const int32_t next = greedy.sample(last, cfg.vocab_size, {});
      generated.push_back(next);
      if (s + 1 == steps) break;
      logits = sequence.feed({next}, 1);
    }
    std::printf("{\"tokens\": [");
    for (size_t i = 0; i < generated.size(); ++i) std::printf("%s%d", i ? ", " : "", generated[i]);
    std::printf("], \"vocab\": %lld}\n", (long long)cfg.vocab_size);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "logits_driver: " << e.what() << "\n";
    return 1;
  }
}
