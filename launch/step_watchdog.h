// Ends a job whose step waits forever (a peer dead, frozen, or cut off; Open MPI's TCP transport
// has no timeout of its own): a thread that looks four times a second at the MPI operation this
// rank is in (parallel/operation_watch.h) and, once one has waited --step-timeout seconds,
// reports it in one line naming the operation, its group and the ranks and hosts it waits for,
// and ends every rank (launch/job_failure.h). The waits between steps (a follower of an idle
// server) are not operations of a step, and are never reported.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "parallel/operation_watch.h"

namespace tessera::cli {

// "MPI all_reduce of 4096 f32 in the tp group has waited 30.2 s (--step-timeout 30) for rank 2
// on host h2" (the hosts where known).
std::string describe_stuck(const WaitingOperation& op, double timeout_seconds);

class StepWatchdog {
 public:
  // `end` is called (from the watchdog's thread) with the line; by default the job ends.
  explicit StepWatchdog(double timeout_seconds,
                        std::function<void(const std::string&)> end = nullptr);
  ~StepWatchdog();
  StepWatchdog(const StepWatchdog&) = delete;
  StepWatchdog& operator=(const StepWatchdog&) = delete;

 private:
  void run();
  const double timeout_;
  const std::function<void(const std::string&)> end_;
  std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace tessera::cli
