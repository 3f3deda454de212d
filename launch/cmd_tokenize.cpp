// tessera tokenize: token ids of a text, or of each JSON string line of a file (one JSON array
// of ids per output line). Used by the tokenizer parity tests and handy for debugging prompts.
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "io/model_store.h"
#include "launch/options.h"

namespace tessera::cli {

int run_tokenize(const Args& args) {
  po::options_description desc("Options");
  std::string path, text, input;
  desc.add_options()("model,m", po::value(&path)->required(), "model file (.h5)")(
      "text", po::value(&text), "the text to tokenize")(
      "input,i", po::value(&input), "file with one JSON string per line")(
      "no-special", po::bool_switch(), "do not add BOS/EOS")(
      "no-parse-special", po::bool_switch(), "treat special-token text as plain text");
  po::variables_map vm;
  if (!parse_options("tokenize", "--model FILE (--text TEXT | --input FILE)", desc, args, vm))
    return 0;
  TESSERA_CHECK(vm.count("text") != vm.count("input"),
                "tessera tokenize: give either --text or --input");
  ModelReader reader(path);
  Tokenizer tok(reader.read_tokenizer());
  const bool add = !vm["no-special"].as<bool>(), parse = !vm["no-parse-special"].as<bool>();
  if (vm.count("text")) {
    std::cout << nlohmann::json(tok.encode(text, add, parse)).dump() << "\n";
    return 0;
  }
  std::ifstream in(input);
  TESSERA_CHECK(in, input << ": cannot open");
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    nlohmann::json s;
    try {
      s = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      TESSERA_FAIL(input << " line " << n << ": malformed JSON: " << e.what());
    }
    TESSERA_CHECK(s.is_string(), input << " line " << n << ": expected a JSON string");
    std::cout << nlohmann::json(tok.encode(s.get<std::string>(), add, parse)).dump() << "\n";
  }
  return 0;
}

}  // namespace tessera::cli
