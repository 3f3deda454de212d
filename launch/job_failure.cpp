#include "launch/job_failure.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "parallel/mpi_communicator.h"

namespace tessera::cli {

namespace {

struct World {
  bool running = false;  // MPI initialised and not finalised
  int rank = 0, size = 1;
};

std::atomic<int> remembered_rank{-1}, remembered_size{0};

World world() {
  World w;
  if (remembered_rank.load() >= 0) {
    w.running = true;
    w.rank = remembered_rank.load();
    w.size = remembered_size.load();
    return w;
  }
  w.running = MpiCommunicator::initialized();
  if (w.running) {
    const auto comm = MpiCommunicator::world();
    w.rank = comm->rank();
    w.size = comm->size();
  }
  return w;
}

}  // namespace

void remember_world() {
  const auto comm = MpiCommunicator::world();
  remembered_size.store(comm->size());
  remembered_rank.store(comm->rank());
}

void report_error(const std::string& message) {
  const World w = world();
  if (w.size > 1)
    std::fprintf(stderr, "tessera: error on rank %d of %d: %s\n", w.rank, w.size, message.c_str());
  else
    std::fprintf(stderr, "tessera: error: %s\n", message.c_str());
  std::fflush(stderr);
}

void end_job() {
  if (world().size > 1) MpiCommunicator::abort_job(1);
  MpiCommunicator::finalize();
  std::exit(1);
}

void end_job_with_error(const std::string& message) {
  report_error(message);
  end_job();
}

}  // namespace tessera::cli
