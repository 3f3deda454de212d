// The GPU build of the elementwise kernels (tessera::cuda::device).
#include "kernels/cuda/elementwise.cuh"
