// The GPU build of the quantized linear kernels (tessera::cuda::device).
#include "kernels/cuda/quant_linear.cuh"
