// The GPU build of paged attention (tessera::cuda::device).
#include "kernels/cuda/paged_attention.cuh"
