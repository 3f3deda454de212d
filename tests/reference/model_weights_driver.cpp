// Dumps weights of a tessera model file as tessera decodes them, for the Python parity checks
// (tests/reference/quantized_checkpoint_parity.py).
//
//   model_weights_driver FILE --list    JSON: every weight's name, dtype and shape
//   model_weights_driver FILE NAME...   for each weight: one JSON line {"name", "dtype", "shape"},
//                                       then its float32 values (ModelReader::read_weight: the
//                                       stored blocks decoded; an i32 input order's values as
//                                       floats), little endian, row-major
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "io/model_store.h"
#include "kernels/error.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: model_weights_driver FILE --list | NAME...\n");
    return 2;
  }
  try {
    const tessera::ModelReader reader(argv[1]);
    if (std::strcmp(argv[2], "--list") == 0) {
      nlohmann::json all = nlohmann::json::array();
      for (const tessera::WeightInfo& w : reader.weights())
        all.push_back(
            {{"name", w.name}, {"dtype", tessera::dtype_name(w.dtype)}, {"shape", w.shape}});
      std::cout << all.dump() << "\n";
      return 0;
    }
    for (int i = 2; i < argc; ++i) {
      const tessera::WeightInfo info = reader.weight_info(argv[i]);
      tessera::Tensor t;
      if (info.dtype == tessera::DType::kI32) {  // an input order: its values as floats (exact)
        const tessera::Tensor order = reader.read_weight_slice(
            argv[i], 0, info.shape[0], 0, 0, tessera::ModelReader::As::kStored);
        t = tessera::Tensor::empty(info.shape, tessera::DType::kF32);
        for (int64_t j = 0; j < info.shape[0]; ++j)
          t.data<float>()[j] = float(order.data<int32_t>()[j]);
      } else {
        t = reader.read_weight(argv[i]);
      }
      const nlohmann::json head = {
          {"name", info.name}, {"dtype", tessera::dtype_name(info.dtype)}, {"shape", info.shape}};
      const std::string line = head.dump() + "\n";
      std::fwrite(line.data(), 1, line.size(), stdout);
      std::fwrite(t.data<float>(), sizeof(float), size_t(t.numel()), stdout);
    }
  } catch (const tessera::Error& e) {
    std::fprintf(stderr, "model_weights_driver: %s\n", e.what());
    return 1;
  }
  return 0;
}
