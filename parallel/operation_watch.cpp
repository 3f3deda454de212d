#include "parallel/operation_watch.h"

#include <chrono>
#include <mutex>

#include "parallel/mpi_communicator.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

struct Slot {
  int not_a_step = 0;  // NotAStep scopes alive
  bool active = false;
  const char* op = nullptr;
  const MpiCommunicator* comm = nullptr;
  int64_t elements = 0;
  std::string_view dtype;
  int peer = -1, second_peer = -1;
  Clock::time_point since;
};

std::mutex& slot_mutex() {
  static std::mutex mu;
  return mu;
}

Slot& slot() {  // (with slot_mutex held)
  static Slot s;
  return s;
}

}  // namespace

OperationWatch::Scope::Scope(const char* op, const MpiCommunicator& comm, int64_t elements,
                             std::string_view dtype, int peer, int second_peer) {
  std::lock_guard<std::mutex> lock(slot_mutex());
  Slot& s = slot();
  if (s.not_a_step > 0) return;
  s = Slot{0, true, op, &comm, elements, dtype, peer, second_peer, Clock::now()};
}

OperationWatch::Scope::~Scope() {
  std::lock_guard<std::mutex> lock(slot_mutex());
  slot().active = false;
}

OperationWatch::NotAStep::NotAStep() {
  std::lock_guard<std::mutex> lock(slot_mutex());
  ++slot().not_a_step;
}

OperationWatch::NotAStep::~NotAStep() {
  std::lock_guard<std::mutex> lock(slot_mutex());
  --slot().not_a_step;
}

std::optional<WaitingOperation> OperationWatch::current() {
  std::lock_guard<std::mutex> lock(slot_mutex());
  const Slot& s = slot();
  if (!s.active) return std::nullopt;
  WaitingOperation w;
  w.what = std::string(s.op) + " of " + std::to_string(s.elements) + " " + std::string(s.dtype) +
           " in the " + s.comm->name() + " group";
  if (s.peer >= 0) {
    w.peers.push_back(s.comm->world_rank_of(s.peer));
    if (s.second_peer >= 0 && s.second_peer != s.peer)
      w.peers.push_back(s.comm->world_rank_of(s.second_peer));
  } else {
    for (int r = 0; r < s.comm->size(); ++r)
      if (r != s.comm->rank()) w.peers.push_back(s.comm->world_rank_of(r));
  }
  w.seconds = std::chrono::duration<double>(Clock::now() - s.since).count();
  return w;
}

}  // namespace tessera
