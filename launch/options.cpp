#include "launch/options.h"

#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "io/convert.h"
#include "io/json_file.h"
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
  if (path.size() > 5 && path.substr(path.size() - 5) == ".json")
    return config_from_hf(read_json_file(path), path);
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

namespace {

// The number at the start of text and the unit after it.
std::pair<double, std::string> number_and_unit(const std::string& text, const std::string& option,
                                               const char* example) {
  size_t end = 0;
  double v = 0;
  try {
    v = std::stod(text, &end);
  } catch (const std::exception&) {
    TESSERA_FAIL(option << " '" << text << "' is not a number with a unit (e.g. " << example
                        << ")");
  }
  TESSERA_CHECK(v > 0 && std::isfinite(v), option << " must be positive, got '" << text << "'");
  return {v, text.substr(end)};
}

}  // namespace

double parse_rate(const std::string& text, const std::string& option) {
  const auto [v, unit] = number_and_unit(text, option, "25Gbit/s");
  static const std::pair<const char*, double> units[] = {
      {"Gbit/s", 1e9 / 8}, {"Mbit/s", 1e6 / 8}, {"GB/s", 1e9}, {"MB/s", 1e6}, {"TB/s", 1e12}};
  for (const auto& [name, scale] : units)
    if (unit == name) return v * scale;
  TESSERA_FAIL(option << " unit '" << unit << "' (use Gbit/s, Mbit/s, GB/s, MB/s or TB/s)");
}

double parse_flops(const std::string& text, const std::string& option) {
  const auto [v, unit] = number_and_unit(text, option, "600TFLOP/s");
  static const std::pair<const char*, double> units[] = {
      {"TFLOP/s", 1e12}, {"GFLOP/s", 1e9}, {"PFLOP/s", 1e15}};
  for (const auto& [name, scale] : units)
    if (unit == name) return v * scale;
  TESSERA_FAIL(option << " unit '" << unit << "' (use GFLOP/s, TFLOP/s or PFLOP/s)");
}

double parse_seconds(const std::string& text, const std::string& option) {
  const auto [v, unit] = number_and_unit(text, option, "0.2ms");
  static const std::pair<const char*, double> units[] = {{"us", 1e-6}, {"ms", 1e-3}, {"s", 1}};
  for (const auto& [name, scale] : units)
    if (unit == name) return v * scale;
  TESSERA_FAIL(option << " unit '" << unit << "' (use us, ms or s)");
}

}  // namespace tessera::cli
