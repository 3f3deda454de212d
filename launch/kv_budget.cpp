#include "launch/kv_budget.h"

#include <fstream>
#include <sstream>

#include "launch/options.h"
#include "parallel/mpi_communicator.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_memory.h"
#endif

namespace tessera::cli {
namespace {

int ranks_on_this_node() {
  return MpiCommunicator::initialized() ? MpiCommunicator::world()->node_local()->size() : 1;
}

}  // namespace

uint64_t available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream s(line.substr(13));
      uint64_t kb = 0;
      s >> kb;
      return kb * 1024;
    }
  return 0;
}

int64_t kv_cache_blocks(const KvBudget& budget, const KvPoolShape& shape, Communicator& world) {
  TESSERA_CHECK(budget.tokens >= 0, "--kv-cache-tokens must be >= 0");
  int64_t blocks = 0;
  if (budget.tokens > 0) {
    blocks = budget.tokens / shape.block_size;
  } else {
    const bool gpu = !shape.device.is_cpu();
    const MemoryAmount amount = parse_memory_amount(
        budget.memory == "auto" ? (gpu ? "0.9" : "0.25") : budget.memory, "--kv-cache-memory");
    const int local = ranks_on_this_node();  // collective over the world
    // A fraction: on a GPU of its reservation's largest free range (the pool's tensors are
    // carved from it), on the CPU of the node's available memory shared by its ranks.
    double whole = double(available_memory()) / local;
#if TESSERA_HAVE_CUDA
    if (gpu) whole = double(cuda::memory_stats(shape.device.index).largest_free);
#endif
    const uint64_t bytes = amount.of(whole);
    blocks = int64_t(bytes / uint64_t(std::max<int64_t>(1, shape.bytes_per_block())));
  }
  Tensor t = Tensor::from_i32({int32_t(std::min<int64_t>(blocks, INT32_MAX))}, {1});
  world.all_reduce(t, ReduceOp::kMin);
  blocks = t.data<int32_t>()[0];
  TESSERA_CHECK(blocks >= 1, "the KV cache budget holds no block of "
                                 << shape.block_size << " tokens on some rank (a block needs "
                                 << shape.bytes_per_block()
                                 << " bytes there): raise --kv-cache-memory or --kv-cache-tokens");
  return blocks;
}

}  // namespace tessera::cli
