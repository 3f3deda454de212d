#include "launch/options.h"

#include <iostream>

#include "kernels/error.h"

namespace tessera::cli {

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

}  // namespace tessera::cli
