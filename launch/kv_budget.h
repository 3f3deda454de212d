// How many KV blocks every rank's pool gets: from --kv-cache-tokens, or from a memory budget
// (--kv-cache-memory: bytes like 2GiB; or a fraction: on the CPU of the memory available on the
// node, shared by the node's ranks, on a GPU of what its reservation has left after the weights;
// auto is 0.25 on the CPU and 0.9 on a GPU), the least over all ranks so that every pool has the
// same number of blocks (the plans name blocks by number).
#pragma once

#include <cstdint>
#include <string>

#include "parallel/communicator.h"
#include "runtime/kv_cache.h"

namespace tessera::cli {

struct KvBudget {
  std::string memory = "auto";  // --kv-cache-memory
  int64_t tokens = 0;           // --kv-cache-tokens (overrides memory when > 0)
};

// MemAvailable from /proc/meminfo, in bytes (0 if unknown).
uint64_t available_memory();

// Collective over world. Throws naming the flags when a rank's budget holds no block.
int64_t kv_cache_blocks(const KvBudget& budget, const KvPoolShape& shape, Communicator& world);

}  // namespace tessera::cli
