// Boost.Program_options glue shared by the subcommands.
#pragma once

#include <boost/program_options.hpp>
#include <cstdint>
#include <string>

#include "io/model_config.h"
#include "launch/commands.h"

namespace tessera::cli {

namespace po = boost::program_options;

// Parses args against desc; returns false (after printing usage) when --help was asked.
// A bad option becomes a tessera::Error naming it.
bool parse_options(const std::string& command, const std::string& synopsis,
                   po::options_description& desc, const Args& args, po::variables_map& vm,
                   const po::positional_options_description* positional = nullptr);

// "80GiB", "80GB", "141G", "512MiB", "8e10": bytes. `option` names the flag in errors.
// A model's config from a preset (configs/*.json, Hugging Face config.json form) or a tessera
// model file.
ModelConfig load_model_config(const std::string& path);
// A memory flag's value: a fraction in (0, 1] of something the caller names, or bytes ("2GiB").
struct MemoryAmount {
  double fraction = 0;  // > 0 when the value was a fraction
  uint64_t bytes = 0;   // otherwise
  // bytes, or the fraction of `whole`.
  uint64_t of(double whole) const { return fraction > 0 ? uint64_t(fraction * whole) : bytes; }
};
MemoryAmount parse_memory_amount(const std::string& text, const std::string& option);
// Writes text to path (a command's --json output); throws naming the path when it cannot.
void write_text_file(const std::string& path, const std::string& text);
uint64_t parse_bytes(const std::string& text, const std::string& option);
// A rate in bytes/s from "25Gbit/s", "100Mbit/s", "450GB/s", "900MB/s", "3TB/s".
double parse_rate(const std::string& text, const std::string& option);
// Floating-point operations per second from "600TFLOP/s", "50GFLOP/s".
double parse_flops(const std::string& text, const std::string& option);
// Seconds from "10us", "0.2ms", "5ms", "1s".
double parse_seconds(const std::string& text, const std::string& option);

}  // namespace tessera::cli
