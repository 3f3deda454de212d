#include "kernels/cuda/launchers.h"

namespace tessera::cuda {

const Launchers& gpu_launchers() {
  static const Launchers l = TESSERA_LAUNCHER_TABLE(device, "gpu");
  return l;
}

}  // namespace tessera::cuda
