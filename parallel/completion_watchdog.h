// Turns work that never finishes into an error instead of a hang. Work queued on a GPU stream (a
// collective waiting for a peer) finishes later than the call that queued it; the watchdog polls
// each watched item, oldest first, on a thread of its own. When an item fails or is still running
// after the timeout, it remembers why, calls `abort` once (which must make the stuck work end:
// ncclCommAbort for NCCL), and drops every item. The owner's next check() or watch() throws
// that error, so a stuck collective surfaces as one line naming it. No CUDA here: the items'
// poll functions hold the device handles, so the logic is tested on the CPU.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace tessera {

class CompletionWatchdog {
 public:
  enum class State { kRunning, kDone, kFailed };
  // Says how an item stands; on kFailed it writes why into `error`.
  using Poll = std::function<State(std::string& error)>;

  CompletionWatchdog(double timeout_seconds, std::function<void()> abort,
                     std::chrono::microseconds poll_interval = std::chrono::microseconds(200));
  ~CompletionWatchdog();  // stops polling (what is still running is not waited for)
  CompletionWatchdog(const CompletionWatchdog&) = delete;
  CompletionWatchdog& operator=(const CompletionWatchdog&) = delete;

  // Watches `poll` from now on; `what` names the work in the error ("all_reduce of 4096 floats").
  // Throws tessera::Error when an earlier item failed.
  void watch(std::string what, Poll poll);
  // Throws tessera::Error with the first failure's message, if any.
  void check() const;
  bool failed() const;
  // Fails now with `message` (as a timeout found by the owner would): remembers it, calls abort
  // once, drops every item. Does nothing when a failure is already remembered.
  void fail_now(const std::string& message);
  // Blocks until every item watched so far is done, or one failed (then throws).
  void wait_all();
  size_t pending() const;

 private:
  struct Item {
    std::string what;
    Poll poll;
    std::chrono::steady_clock::time_point since;
  };
  void run();
  void fail(const std::string& message);  // with mu_ held

  const std::chrono::duration<double> timeout_;
  const std::function<void()> abort_;
  const std::chrono::microseconds interval_;
  mutable std::mutex mu_;
  std::condition_variable changed_;  // an item was added or finished, or stop
  std::deque<Item> items_;
  std::string error_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace tessera
