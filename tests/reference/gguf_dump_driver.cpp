// Dumps what tessera reads from a GGUF file, for the Python parity check
// (tests/reference/gguf_dequant_parity.py).
//
//   gguf_dump_driver FILE --list      JSON: version, alignment, data_offset and every tensor's
//                                     name, type, row-major shape, absolute offset, nbytes
//   gguf_dump_driver FILE --meta      JSON: the metadata object
//   gguf_dump_driver FILE --all       every tensor tessera can dequantize, as below
//   gguf_dump_driver FILE NAME...     for each tensor: one JSON line {"name", "type", "shape"},
//                                     then its float32 values, little endian, row-major
//   gguf_dump_driver --decode TYPE    blocks of TYPE (a GGML name: Q4_K, ...) on standard input,
//                                     their float32 values on standard output (kernels/quant.h)
//   gguf_dump_driver --encode TYPE    float32 values on standard input (whole blocks), tessera's
//                                     quantization of them as TYPE on standard output
#include <cctype>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/ggml_quant.h"
#include "io/gguf.h"
#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/quant.h"

namespace {

void dump_tensor(const tessera::GgufFile& g, const tessera::GgufTensorInfo& t) {
  const std::vector<float> v = g.read_f32(t);
  const nlohmann::json head = {
      {"name", t.name}, {"type", tessera::ggml_type_name(t.ggml_type)}, {"shape", t.shape}};
  const std::string line = head.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fwrite(v.data(), sizeof(float), v.size(), stdout);
}

std::string read_stdin() {
  std::string bytes;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) bytes.append(buf, n);
  return bytes;
}

// --decode / --encode: tessera's block codec on standard input and output.
void codec(const std::string& mode, const std::string& ggml_name) {
  std::string lower = ggml_name;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  const tessera::DType type = tessera::dtype_from_name(lower);
  const std::string in = read_stdin();
  const int64_t block = tessera::dtype_block_elements(type);
  const size_t block_bytes = tessera::dtype_block_bytes(type);
  if (mode == "--decode") {
    const int64_t n = int64_t(in.size() / block_bytes) * block;
    std::vector<float> out(static_cast<size_t>(n));
    tessera::convert_to_f32(type, in.data(), out.data(), out.size());
    std::fwrite(out.data(), sizeof(float), out.size(), stdout);
  } else {
    const int64_t n = int64_t(in.size() / sizeof(float));
    std::vector<float> values(static_cast<size_t>(n));
    std::memcpy(values.data(), in.data(), values.size() * sizeof(float));
    std::string out(tessera::dtype_bytes(type, n), '\0');
    tessera::quantize(type, values.data(), out.data(), n);
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: gguf_dump_driver FILE (--list | --meta | --all | NAME...) | "
                 "(--decode | --encode) TYPE\n";
    return 2;
  }
  try {
    const std::string first = argv[1];
    if (first == "--decode" || first == "--encode") {
      codec(first, argv[2]);
      std::fflush(stdout);
      return 0;
    }
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
