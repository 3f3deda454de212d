// The GPU build of the attention-state kernels (tessera::cuda::device).
#include "kernels/cuda/state.cuh"
