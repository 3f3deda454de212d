#include "io/json_file.h"

#include <fstream>

#include "kernels/error.h"

namespace tessera {

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  TESSERA_CHECK(in, path << ": cannot open");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    TESSERA_FAIL(path << ": not valid JSON (" << e.what() << ")");
  }
}

}  // namespace tessera
