// Dumps what tessera reads from a GGUF file, for the Python parity check
// (tests/reference/gguf_dequant_parity.py).
//
//   gguf_dump_driver FILE --list      JSON: version, alignment, data_offset and every tensor's
//                                     name, type, row-major shape, absolute offset, nbytes
//   gguf_dump_driver FILE --meta      JSON: the metadata object
//   gguf_dump_driver FILE --all       every tensor tessera can dequantize, as below
//   gguf_dump_driver FILE NAME...     for each tensor: one JSON line {"name", "type", "shape"},
//                                     then its float32 values, little endian, row-major
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/ggml_quant.h"
#include "io/gguf.h"
#include "kernels/error.h"

namespace {

void dump_tensor(const tessera::GgufFile& g, const tessera::GgufTensorInfo& t) {
  const std::vector<float> v = g.read_f32(t);
  const nlohmann::json head = {
      {"name", t.name}, {"type", tessera::ggml_type_name(t.ggml_type)}, {"shape", t.shape}};
  const std::string line = head.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fwrite(v.data(), sizeof(float), v.size(), stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: gguf_dump_driver FILE (--list | --meta | --all | NAME...)\n";
    return 2;
  }
  try {
    const tessera::GgufFile g = tessera::GgufFile::open(argv[1]);
    const std::string mode = argv[2];
    if (mode == "--list") {
      nlohmann::json out = {{"version", g.version()},
                            {"alignment", g.alignment()},
                            {"data_offset", g.data_offset()},
                            {"tensors", nlohmann::json::array()}};
      for (const auto& t : g.tensors()) {
        out["tensors"].push_back({{"name", t.name},
                                  {"type", tessera::ggml_type_name(t.ggml_type)},
                                  {"shape", t.shape},
                                  {"offset", t.offset},
                                  {"nbytes", t.nbytes}});
      }
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else if (mode == "--meta") {
      std::cout << g.metadata().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
    } else if (mode == "--all") {
      for (const auto& t : g.tensors()) {
        if (tessera::ggml_can_dequantize(t.ggml_type)) dump_tensor(g, t);
      }
    } else {
      for (int i = 2; i < argc; ++i) dump_tensor(g, g.at(argv[i]));
    }
    std::fflush(stdout);
  } catch (const tessera::Error& e) {
    std::cerr << "gguf_dump_driver: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
