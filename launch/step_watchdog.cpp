#include "launch/step_watchdog.h"

#include <chrono>
#include <cstdio>

#include "kernels/error.h"
#include "launch/job_failure.h"
#include "parallel/mpi_communicator.h"

namespace tessera::cli {

std::string describe_stuck(const WaitingOperation& op, double timeout_seconds) {
  char waited[64];
  std::snprintf(waited, sizeof waited, "%.1f s (--step-timeout %g)", op.seconds, timeout_seconds);
  std::string peers;
  for (size_t i = 0; i < op.peers.size(); ++i) {
    const std::string host = MpiCommunicator::host_of(op.peers[i]);
    peers += (i == 0                     ? ""
              : i + 1 == op.peers.size() ? " or "
                                         : ", ") +
             std::string("rank ") + std::to_string(op.peers[i]) +
             (host.empty() ? "" : " on host " + host);
  }
  return "MPI " + op.what + " has waited " + waited + " for " +
         (peers.empty() ? std::string("its peers") : peers) +
         ": a rank stopped, or the link to its host is down";
}

StepWatchdog::StepWatchdog(double timeout_seconds, std::function<void(const std::string&)> end)
    : timeout_(timeout_seconds),
      end_(end ? std::move(end) : [](const std::string& line) { end_job_with_error(line); }) {
  TESSERA_CHECK(timeout_seconds > 0, "--step-timeout must be positive, got " << timeout_seconds);
  thread_ = std::thread([this] { run(); });
}

StepWatchdog::~StepWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
}

void StepWatchdog::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return stop_; })) {
    const std::optional<WaitingOperation> op = OperationWatch::current();
    if (op && op->seconds > timeout_) {
      end_(describe_stuck(*op, timeout_));
      return;
    }
  }
}

}  // namespace tessera::cli
