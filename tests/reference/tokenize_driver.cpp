// Test driver for tests/reference/tokenizer_parity.py: loads a Hugging Face tokenizer.json with
// tessera's importer and encodes each input line.
//   tokenize_driver TOKENIZER_JSON [TOKENIZER_CONFIG_JSON] [--no-special] [--no-parse-special]
//                   [--decode] < strings.jsonl
//   tokenize_driver --data TOKENIZER_DATA_JSON ...   (TokenizerData's fields as a JSON object,
//                   e.g. mapped from a GGUF by the parity script)
// Each stdin line is a JSON string; each stdout line is a JSON array of ids. With --decode, each
// stdin line is a JSON array of ids and each stdout line the decoded JSON string (skipping
// control tokens).
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "io/tokenizer.h"

namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  return nlohmann::json::parse(in);
}

tessera::TokenizerData data_from_json(const nlohmann::json& j) {
  tessera::TokenizerData d;
  d.model = j.at("model").get<std::string>();
  d.pre = j.value("pre", "");
  d.tokens = j.at("tokens").get<std::vector<std::string>>();
  d.scores = j.value("scores", std::vector<float>{});
  d.token_types = j.value("token_types", std::vector<int32_t>{});
  d.merges = j.value("merges", std::vector<std::string>{});
  d.bos_id = j.value("bos_id", -1);
  d.eos_id = j.value("eos_id", -1);
  d.unk_id = j.value("unk_id", -1);
  d.pad_id = j.value("pad_id", -1);
  d.stop_ids = j.value("stop_ids", std::vector<int32_t>{});
  d.add_bos = j.value("add_bos", false);
  d.add_eos = j.value("add_eos", false);
  d.add_space_prefix = j.value("add_space_prefix", false);
  d.chat_template = j.value("chat_template", "");
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files;
  std::string data_path;
  bool add_special = true, parse_special = true, decode = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--data" && i + 1 < argc) {
      data_path = argv[++i];
    } else if (a == "--no-special") {
      add_special = false;
    } else if (a == "--no-parse-special") {
      parse_special = false;
    } else if (a == "--decode") {
      decode = true;
    } else {
      files.push_back(a);
    }
  }
  const bool usage_ok =
      data_path.empty() ? (files.size() == 1 || files.size() == 2) : files.empty();
  if (!usage_ok) {
    std::cerr << "usage: tokenize_driver (TOKENIZER_JSON [TOKENIZER_CONFIG_JSON] | --data FILE) "
                 "[--no-special] [--no-parse-special] [--decode] < lines.jsonl\n";
    return 2;
  }
  try {
    const nlohmann::json config = files.size() == 2 ? read_json(files[1]) : nlohmann::json();
    const tessera::Tokenizer tok(data_path.empty()
                                     ? tessera::tokenizer_data_from_hf(read_json(files[0]), config)
                                     : data_from_json(read_json(data_path)));
    std::string line;
    while (std::getline(std::cin, line)) {
      const nlohmann::json in = nlohmann::json::parse(line);
      if (decode) {
        std::cout << nlohmann::json(tok.decode(in.get<std::vector<int32_t>>(), true)).dump()
                  << "\n";
      } else {
        std::cout
            << nlohmann::json(tok.encode(in.get<std::string>(), add_special, parse_special)).dump()
            << "\n";
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "tokenize_driver: " << e.what() << "\n";
    return 1;
  }
}
