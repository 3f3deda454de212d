#include "launch/job_failure.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

namespace tessera::cli {

void end_job_with_error(const std::string& message) {
  int init = 0, fin = 0, rank = 0, size = 1;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
  if (size > 1) {
    std::fprintf(stderr, "tessera: error on rank %d of %d: %s\n", rank, size, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  std::fprintf(stderr, "tessera: error: %s\n", message.c_str());
  if (init && !fin) MPI_Finalize();
  std::exit(1);
}

}  // namespace tessera::cli
