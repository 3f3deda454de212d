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
uint64_t parse_bytes(const std::string& text, const std::string& option);

}  // namespace tessera::cli
