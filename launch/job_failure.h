// How a tessera process ends on an error: one line on stderr ("tessera: error on rank R of N:
// ..." under several ranks, "tessera: error: ..." alone), then an MPI abort so that every rank of
// the job ends (or MPI's finalisation and exit 1 for one rank). Used by main() for what the commands
// throw, and by the step watchdog's thread for a step that waits forever.
#pragma once

#include <string>

namespace tessera::cli {

[[noreturn]] void end_job_with_error(const std::string& message);
// Remembers the world's rank and size (main(), once MPI is initialised), so that the step
// watchdog's thread names its rank without calling MPI (only the abort, which Open MPI takes
// from any thread; the funneled thread level does not promise it).
void remember_world();
// The two halves of it: the line now, and the end of the job (when something must happen in
// between, as a server answering its clients).
void report_error(const std::string& message);
[[noreturn]] void end_job();

}  // namespace tessera::cli
