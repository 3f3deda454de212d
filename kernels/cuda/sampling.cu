// The GPU build of the sampling kernels (tessera::cuda::device).
#include "kernels/cuda/sampling.cuh"
