// The CUDA emulator's scheduler: fibers for the threads of one block, run until each reaches a
// barrier or ends, in a seeded random order. See simt_emulator.h.
#include "kernels/cuda/simt_emulator.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

#if defined(__x86_64__)
// A fiber switch: saves the callee-saved registers and the FPU/SSE control words on the current
// stack, stores the stack pointer in *from, and resumes the stack at `to`. (glibc's swapcontext
// also saves the signal mask, a system call per switch: half the emulator's time.)
extern "C" void tessera_simt_switch(void** from, void* to);
asm(R"(
.text
.p2align 4
.globl tessera_simt_switch
.type tessera_simt_switch,@function
tessera_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  stmxcsr 8(%rsp)
  fnstcw (%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  fldcw (%rsp)
  ldmxcsr 8(%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size tessera_simt_switch,.-tessera_simt_switch
.section .note.GNU-stack,"",@progbits
.text
)");
#endif

namespace tessera::simt {
namespace {

// A suspended execution: a fiber's, or the scheduler's.
struct Context {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

void switch_context(Context& from, Context& to) {
#if defined(__x86_64__)
  tessera_simt_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

// Makes `c` start entry() (which must never return) on the given stack.
void prepare_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
#if defined(__x86_64__)
  // The frame tessera_simt_switch pops: control words, six registers, then entry as the return
  // address, with entry seeing the stack as a called function does (rsp = 8 mod 16).
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t(15);
  auto* p = reinterpret_cast<uint64_t*>(top);
  *--p = 0;                                  // entry's own (never used) return address
  *--p = reinterpret_cast<uint64_t>(entry);  // where the first switch "returns" to
  for (int i = 0; i < 6; ++i) *--p = 0;      // rbp rbx r12 r13 r14 r15
  p -= 2;
  uint32_t mxcsr;
  uint16_t fpu_cw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpu_cw));
  std::memcpy(reinterpret_cast<char*>(p), &fpu_cw, sizeof fpu_cw);
  std::memcpy(reinterpret_cast<char*>(p) + 8, &mxcsr, sizeof mxcsr);
  c.sp = p;
#else
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
#endif
}

constexpr size_t kStackBytes = 32 * 1024;
constexpr unsigned kWarp = 32;

enum class State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
  Context context;
  uint3 idx;
  unsigned linear = 0;
  unsigned collectives = 0;  // warp collectives (shuffles, ballots) this thread has made
  State state = State::kRunnable;
};

struct Warp {
  unsigned live = 0;       // lanes not yet returned
  unsigned live_mask = 0;  // which ones
  unsigned arrived = 0;    // lanes waiting at the warp barrier
  // Two sets of slots, used by alternate collectives: a lane cannot reach collective i + 2's
  // barrier before every lane has passed collective i + 1's, and each lane reads collective i's
  // slots before it arrives there; so one barrier per collective is enough.
  uint64_t slots[2][kWarp] = {};
};

// One launch's state; the fibers of its current block.
struct Machine {
  dim3 grid, block;
  uint3 block_index;
  std::vector<unsigned char> shared;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<std::unique_ptr<char[]>> stacks;
  unsigned live = 0, block_arrived = 0;  // threads not yet returned; threads at __syncthreads
  Fiber* running = nullptr;
  Context scheduler;
  const std::function<void()>* body = nullptr;
  std::string error;  // set by a fiber; the block is abandoned
  std::mt19937_64 order_rng{0x5eed};
};

Machine& machine() {
  static Machine m;
  return m;
}
std::string& last_error() {
  static std::string e;
  return e;
}

void fail(const std::string& what) {
  Machine& m = machine();
  if (m.error.empty()) {
    std::ostringstream os;
    os << what << " (block " << m.block_index.x << "," << m.block_index.y << "," << m.block_index.z
       << ", thread " << m.running->idx.x << "," << m.running->idx.y << "," << m.running->idx.z
       << ")";
    m.error = os.str();
  }
  // Back to the scheduler for good: this fiber is never resumed.
  m.running->state = State::kDone;
  switch_context(m.running->context, m.scheduler);
}

// Every thread of the block must reach a __syncthreads: one that returned instead never arrives,
// and the others are reported as deadlocked (the GPU may hang or go on; neither is meant).
void release_block_barrier_if_complete(Machine& m) {
  if (m.block_arrived < m.fibers.size()) return;
  for (Fiber& f : m.fibers)
    if (f.state == State::kAtBlockBarrier) f.state = State::kRunnable;
  m.block_arrived = 0;
}

void release_warp_barrier_if_complete(Machine& m, unsigned warp) {
  Warp& w = m.warps[warp];
  if (w.arrived == 0 || w.arrived < w.live) return;
  const unsigned first = warp * kWarp;
  for (unsigned i = first; i < std::min<unsigned>(first + kWarp, unsigned(m.fibers.size())); ++i)
    if (m.fibers[i].state == State::kAtWarpBarrier) m.fibers[i].state = State::kRunnable;
  w.arrived = 0;
}

void wait_here(Machine& m) {
  switch_context(m.running->context, m.scheduler);
}

void fiber_entry() {
  Machine& m = machine();
  (*m.body)();
  Fiber& f = *m.running;
  f.state = State::kDone;
  --m.live;
  --m.warps[f.linear / kWarp].live;
  m.warps[f.linear / kWarp].live_mask &= ~(1u << (f.linear % kWarp));
  release_warp_barrier_if_complete(m, f.linear / kWarp);
  switch_context(f.context, m.scheduler);  // for good: a finished fiber is never resumed
}

// Runs every thread of the current block to its end. Returns false on a deadlock or error.
bool run_block(Machine& m) {
  const unsigned n = unsigned(m.fibers.size());
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = m.fibers[i];
    f.state = State::kRunnable;
    f.collectives = 0;
    prepare_context(f.context, m.stacks[i].get(), kStackBytes, fiber_entry);
  }
  for (Warp& w : m.warps) w = Warp{};
  for (unsigned i = 0; i < n; ++i) {
    ++m.warps[i / kWarp].live;
    m.warps[i / kWarp].live_mask |= 1u << (i % kWarp);
  }
  m.live = n;
  m.block_arrived = 0;
  // Poison the dynamic shared memory: a kernel that reads what it did not write sees NaNs.
  std::fill(m.shared.begin(), m.shared.end(), static_cast<unsigned char>(0xff));
  std::vector<unsigned> order(n);
  for (unsigned i = 0; i < n; ++i) order[i] = i;
  while (m.live > 0) {
    std::shuffle(order.begin(), order.end(), m.order_rng);
    bool ran = false;
    for (unsigned i : order) {
      Fiber& f = m.fibers[i];
      if (f.state != State::kRunnable) continue;
      ran = true;
      m.running = &f;
      switch_context(m.scheduler, f.context);
      if (!m.error.empty()) return false;
    }
    if (!ran) {
      std::ostringstream os;
      unsigned at_block = 0, at_warp = 0;
      for (const Fiber& f : m.fibers) {
        at_block += f.state == State::kAtBlockBarrier;
        at_warp += f.state == State::kAtWarpBarrier;
      }
      os << "deadlock in block " << m.block_index.x << "," << m.block_index.y << ","
         << m.block_index.z << ": " << at_block << " threads wait at __syncthreads, " << at_warp
         << " at a warp collective, " << (n - m.live)
         << " have returned (a barrier in divergent code?)";
      m.error = os.str();
      return false;
    }
  }
  return true;
}

}  // namespace

const uint3& thread_idx() {
  return machine().running->idx;
}
const uint3& block_idx() {
  return machine().block_index;
}
const dim3& block_dim() {
  return machine().block;
}
const dim3& grid_dim() {
  return machine().grid;
}
void* dynamic_shared_memory() {
  return machine().shared.data();
}
unsigned lane_id() {
  return machine().running->linear % kWarp;
}

void sync_block() {
  Machine& m = machine();
  m.running->state = State::kAtBlockBarrier;
  ++m.block_arrived;
  release_block_barrier_if_complete(m);
  wait_here(m);
}

void sync_warp() {
  Machine& m = machine();
  const unsigned warp = m.running->linear / kWarp;
  m.running->state = State::kAtWarpBarrier;
  ++m.warps[warp].arrived;
  release_warp_barrier_if_complete(m, warp);
  wait_here(m);
}

namespace {
// The lanes of the running fiber's warp that have not returned; fails unless mask names them.
unsigned checked_live_lanes(Machine& m, unsigned mask) {
  const unsigned live_mask = m.warps[m.running->linear / kWarp].live_mask;
  if (mask != live_mask) {
    std::ostringstream os;
    os << "warp collective with mask 0x" << std::hex << mask
       << " while the warp's live lanes are 0x" << live_mask << " (partial or stale mask)";
    fail(os.str());
  }
  return live_mask;
}
}  // namespace

uint64_t exchange_in_warp(unsigned mask, uint64_t bits, int src) {
  Machine& m = machine();
  const unsigned warp = m.running->linear / kWarp, first = warp * kWarp;
  const unsigned live_mask = checked_live_lanes(m, mask);
  const unsigned set = m.running->collectives++ & 1u;
  m.warps[warp].slots[set][lane_id()] = bits;
  sync_warp();
  if (src < 0 || src >= int(kWarp) || first + unsigned(src) >= m.fibers.size() ||
      !(live_mask >> src & 1u))
    fail("warp shuffle reads lane " + std::to_string(src) + ", which is not in the warp");
  return m.warps[warp].slots[set][src];
}

unsigned ballot_in_warp(unsigned mask, bool pred) {
  Machine& m = machine();
  const unsigned warp = m.running->linear / kWarp;
  const unsigned live_mask = checked_live_lanes(m, mask);
  const unsigned set = m.running->collectives++ & 1u;
  m.warps[warp].slots[set][lane_id()] = pred;
  sync_warp();
  unsigned out = 0;
  for (unsigned i = 0; i < kWarp; ++i)
    if ((live_mask >> i & 1u) && m.warps[warp].slots[set][i]) out |= 1u << i;
  return out;
}

namespace {
std::map<const void*, size_t>& shared_limits() {
  static std::map<const void*, size_t> limits;
  return limits;
}
}  // namespace

void set_shared_limit(const void* kernel, size_t bytes) {
  shared_limits()[kernel] = std::min<size_t>(bytes, 227 * 1024);
}
size_t shared_limit(const void* kernel) {
  const auto it = shared_limits().find(kernel);
  return it == shared_limits().end() ? 48 * 1024 : it->second;
}

void set_schedule_seed(uint64_t seed) {
  machine().order_rng.seed(seed);
}

namespace {
thread_local std::vector<Recorded>* recording = nullptr;
}  // namespace

void begin_capture() {
  if (recording) throw std::logic_error("the emulator is already capturing on this thread");
  recording = new std::vector<Recorded>();
}

std::vector<Recorded> end_capture() {
  if (!recording) throw std::logic_error("the emulator is not capturing on this thread");
  std::vector<Recorded> out = std::move(*recording);
  delete recording;
  recording = nullptr;
  return out;
}

bool capturing() { return recording != nullptr; }

void record(Recorded work) {
  if (!recording) throw std::logic_error("the emulator records only while capturing");
  recording->push_back(std::move(work));
}

std::string take_launch_error() {
  std::string e;
  e.swap(last_error());
  return e;
}

std::string run(dim3 grid, dim3 block, size_t dynamic_shared_bytes, size_t shared_limit,
                const std::function<void()>& body) {
  Machine& m = machine();
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  std::string err;
  if (threads == 0 || threads > 1024 || block.z > 64)
    err = "invalid configuration: " + std::to_string(threads) + " threads per block";
  else if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 ||
           grid.x > 0x7fffffffu)
    err = "invalid configuration: grid " + std::to_string(grid.x) + "x" + std::to_string(grid.y) +
          "x" + std::to_string(grid.z);
  else if (dynamic_shared_bytes > shared_limit)
    err = "too much shared memory requested: " + std::to_string(dynamic_shared_bytes) +
          " bytes, the kernel may have " + std::to_string(shared_limit);
  if (!err.empty()) return last_error() = err;
  m.grid = grid;
  m.block = block;
  m.error.clear();
  m.body = &body;
  m.shared.assign(dynamic_shared_bytes, 0);
  m.fibers.assign(threads, Fiber{});
  m.warps.assign((threads + kWarp - 1) / kWarp, Warp{});
  while (m.stacks.size() < threads) m.stacks.emplace_back(new char[kStackBytes]);
  for (unsigned z = 0, i = 0; z < block.z; ++z)
    for (unsigned y = 0; y < block.y; ++y)
      for (unsigned x = 0; x < block.x; ++x, ++i) {
        m.fibers[i].idx = uint3{x, y, z};
        m.fibers[i].linear = i;
      }
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        m.block_index = uint3{bx, by, bz};
        if (!run_block(m)) {
          m.running = nullptr;
          return last_error() = m.error;
        }
      }
  m.running = nullptr;
  return {};
}

}  // namespace tessera::simt
