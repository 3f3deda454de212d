// The GPU build of the simple linear kernel and the bias add (tessera::cuda::device).
#include "kernels/cuda/linear.cuh"
