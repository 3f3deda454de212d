// main() for the MPI GoogleTest binaries: MPI is initialised around the tests, only rank 0
// prints gtest's progress, and any rank's failure fails the run (mpirun exits non-zero).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

// A failure on one rank would leave the others waiting in a collective until ctest's timeout:
// end the whole job at once instead, naming the rank.
class AbortOnFailure : public ::testing::EmptyTestEventListener {
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::fprintf(stderr, "rank %d: %s:%d: %s\n", rank,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.message());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
};

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  ::testing::UnitTest::GetInstance()->listeners().Append(new AbortOnFailure);
  const int rc = RUN_ALL_TESTS();
  // Report failures from every rank, not only rank 0's.
  int any = rc != 0, all = 0;
  MPI_Allreduce(&any, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rc != 0) std::fprintf(stderr, "rank %d: tests failed\n", rank);
  MPI_Finalize();
  return all;
}
