#include "launch/options.h"

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "io/convert.h"
#include "io/model_store.h"
#include "kernels/error.h"

namespace tessera::cli {

MemoryAmount parse_memory_amount(const std::string& text, const std::string& option) {
  size_t end = 0;
  double fraction = -1;
  try {
    fraction = std::stod(text, &end);
  } catch (const std::exception&) {
  }
  MemoryAmount m;
  if (end == text.size() && fraction > 0 && fraction <= 1)
    m.fraction = fraction;
  else
    m.bytes = parse_bytes(text, option);
  return m;
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  TESSERA_CHECK(f, path << ": cannot open for writing");
  f << text;
  TESSERA_CHECK_IO(f, path << ": write failed");
}

ModelConfig load_model_config(const std::string& path) {
  if (path.size() > 5 && path.substr(path.size() - 5) == ".json") {
    std::ifstream in(path);
    TESSERA_CHECK(in, path << ": cannot open");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      TESSERA_FAIL(path << ": not valid JSON (" << e.what() << ")");
    }
    return config_from_hf(j, path);
  }
  return ModelReader(path).config();  // a tessera model file
}

bool parse_options(const std::string& command, const std::string& synopsis,
                   po::options_description& desc, const Args& args, po::variables_map& vm,
                   const po::positional_options_description* positional) {
  desc.add_options()("help,h", "show this help");
  try {
    auto parser = po::command_line_parser(args).options(desc);
    if (positional) parser.positional(*positional);
    po::store(parser.run(), vm);
    if (vm.count("help")) {
      std::cout << "Usage: tessera " << command << " " << synopsis << "\n\n" << desc << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    TESSERA_FAIL("tessera " << command << ": " << e.what() << " (see tessera " << command
                            << " --help)");
  }
  return true;
}

uint64_t parse_bytes(const std::string& text, const std::string& option) {
  size_t end = 0;
  double v = 0;
  try {
    v = std::stod(text, &end);
  } catch (const std::exception&) {
    TESSERA_FAIL(option << " '" << text << "' is not a size (e.g. 80GiB)");
  }
  const std::string unit = text.substr(end);
  double scale = 1;
  if (unit == "GiB" || unit == "G" || unit == "g")
    scale = double(1ull << 30);
  else if (unit == "GB")
    scale = 1e9;
  else if (unit == "MiB" || unit == "M" || unit == "m")
    scale = double(1ull << 20);
  else if (unit == "MB")
    scale = 1e6;
  else if (unit == "TiB")
    scale = double(1ull << 40);
  else
    TESSERA_CHECK(unit.empty(), option << " unit '" << unit << "' (use MiB, GiB, GB or TiB)");
  TESSERA_CHECK(v > 0, option << " must be positive");
  return uint64_t(v * scale);
}

}  // namespace tessera::cli
