// What this process's MPI communicators are waiting in, for launch/'s step watchdog, which ends a
// job whose step waits forever on a dead, frozen or unreachable peer (Open MPI's TCP transport
// has no timeout of its own). Every MPI call of a step (a collective, a tensor sent or received,
// a plan's bytes once they are on their way) is a Scope from its start to its end; the patient
// waits between steps (a follower, or a later stage, waiting for its next plan) are not, so an
// idle server is never a stuck step. One thread calls MPI (MPI_THREAD_FUNNELED): one operation
// at most is in flight; the watchdog's thread reads it under a lock.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

class MpiCommunicator;

struct WaitingOperation {
  std::string what;        // "all_reduce of 4096 f32 in the tp group"
  std::vector<int> peers;  // the world ranks it waits on (a collective: every other member)
  double seconds = 0;      // how long it has waited so far
};

class OperationWatch {
 public:
  // The calling thread is in `op` on `comm` from construction to destruction: `elements` of
  // `dtype`, with the group ranks `peer` and `second_peer` (a send, a receive, or both at once)
  // or every other member (peer < 0).
  class Scope {
   public:
    Scope(const char* op, const MpiCommunicator& comm, int64_t elements, std::string_view dtype,
          int peer = -1, int second_peer = -1);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
  };
  // While one is alive, this thread's operations are not a step's (a rank that has finished its
  // share waiting at the end of a job for the others): they are not watched.
  class NotAStep {
   public:
    NotAStep();
    ~NotAStep();
    NotAStep(const NotAStep&) = delete;
    NotAStep& operator=(const NotAStep&) = delete;
  };
  // The operation in flight now, if any.
  static std::optional<WaitingOperation> current();
};

}  // namespace tessera
