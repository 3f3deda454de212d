// Every kernel source compiled by the host compiler against the CUDA emulator
// (tessera::cuda::emulated), for the kernel tests that run where there is no GPU.
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/paged_attention.cuh"
#include "kernels/cuda/sampling.cuh"
