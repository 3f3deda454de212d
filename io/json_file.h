// A JSON file read whole, or one clear error: "PATH: cannot open", "PATH: not valid JSON (...)".
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace tessera {

nlohmann::json read_json_file(const std::string& path);

}  // namespace tessera
