#include "launch/job_failure.h"

#include <mpi.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

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
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  w.running = init && !fin;
  if (w.running) {
    MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &w.size);
  }
  return w;
}

}  // namespace

void remember_world() {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  remembered_size.store(size);
  remembered_rank.store(rank);
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
  const World w = world();
  if (w.size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
  int fin = 0;
  MPI_Finalized(&fin);
  if (w.running && !fin) MPI_Finalize();
  std::exit(1);
}

void end_job_with_error(const std::string& message) {
  report_error(message);
  end_job();
}

}  // namespace tessera::cli
