// The watchdog that turns stuck GPU work (an NCCL collective waiting for a peer) into an error:
// items that finish, fail, or never finish, with an abort that must run exactly once.
#include "parallel/completion_watchdog.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "kernels/error.h"

namespace tessera {
namespace {

using State = CompletionWatchdog::State;
using namespace std::chrono_literals;

// An item that is done once `flag` is set.
CompletionWatchdog::Poll done_when(const std::atomic<bool>& flag) {
  return [&flag](std::string&) { return flag ? State::kDone : State::kRunning; };
}

TEST(CompletionWatchdog, ItemsThatFinishLeaveNoError) {
  std::atomic<int> aborts{0};
  CompletionWatchdog w(5.0, [&] { ++aborts; });
  std::atomic<bool> a{false}, b{false};
  w.watch("first", done_when(a));
  w.watch("second", done_when(b));
  EXPECT_EQ(w.pending(), 2u);
  std::thread finisher([&] {
    std::this_thread::sleep_for(20ms);
    a = true;
    b = true;
  });
  w.wait_all();
  finisher.join();
  EXPECT_EQ(w.pending(), 0u);
  EXPECT_FALSE(w.failed());
  EXPECT_NO_THROW(w.check());
  EXPECT_EQ(aborts, 0);
}

TEST(CompletionWatchdog, StuckItemTimesOutAbortsOnceAndNamesIt) {
  std::atomic<int> aborts{0};
  std::atomic<bool> stuck_released{false};
  CompletionWatchdog w(0.05, [&] {
    ++aborts;
    stuck_released = true;  // as ncclCommAbort ends the stuck kernel
  });
  w.watch("all_reduce of 4096 f32 on the NCCL group of 2 rank(s)", done_when(stuck_released));
  const auto start = std::chrono::steady_clock::now();
  try {
    w.wait_all();
    FAIL() << "a stuck item did not time out";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("all_reduce of 4096 f32 on the NCCL group of 2 rank(s)"), std::string::npos)
        << m;
    EXPECT_NE(m.find("did not finish within 0.05 s"), std::string::npos) << m;
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
  EXPECT_EQ(aborts, 1);
  EXPECT_TRUE(w.failed());
  EXPECT_THROW(w.check(), Error);
  // After a failure nothing more is taken, and the abort is not repeated.
  std::atomic<bool> never{false};
  EXPECT_THROW(w.watch("later", done_when(never)), Error);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(aborts, 1);
}

TEST(CompletionWatchdog, FailedItemReportsWhyAndDropsTheRest) {
  std::atomic<int> aborts{0};
  CompletionWatchdog w(5.0, [&] { ++aborts; });
  w.watch("send of 16 bf16 to rank 1", [](std::string& why) {
    why = "unhandled system error";
    return State::kFailed;
  });
  std::atomic<bool> never{false};
  try {
    // (the watchdog's thread may find the failure first: then this watch throws it)
    w.watch("recv after it", done_when(never));
    w.wait_all();
    FAIL() << "a failed item was not reported";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "send of 16 bf16 to rank 1 failed: unhandled system error");
  }
  EXPECT_EQ(w.pending(), 0u);
  EXPECT_EQ(aborts, 1);
}

TEST(CompletionWatchdog, PollsOldestFirstAndOnlyUntilDone) {
  // Work on one stream finishes in order: a later item is not polled before an earlier one ends.
  std::atomic<bool> first_done{false};
  std::atomic<int> second_polls_early{0}, second_polls{0};
  CompletionWatchdog w(5.0, nullptr, 100us);
  w.watch("first", done_when(first_done));
  w.watch("second", [&](std::string&) {
    if (!first_done) ++second_polls_early;
    ++second_polls;
    return State::kDone;
  });
  std::this_thread::sleep_for(10ms);
  EXPECT_EQ(second_polls, 0);
  first_done = true;
  w.wait_all();
  EXPECT_EQ(second_polls_early, 0);
  EXPECT_EQ(second_polls, 1);
}

TEST(CompletionWatchdog, TheOwnerCanFailItWithItsOwnReason) {
  // An NCCL call the owner waited on too long: the owner's message wins, the abort runs once, and
  // nothing is polled after it (the aborted communicator is gone).
  std::atomic<int> aborts{0}, polls_after{0};
  std::atomic<bool> aborted{false};
  CompletionWatchdog w(5.0, [&] {
    ++aborts;
    aborted = true;
  });
  w.watch("all_gather", [&](std::string&) {
    if (aborted) ++polls_after;
    return State::kRunning;
  });
  w.fail_now("NCCL setup on the NCCL group of 2 rank(s) did not finish within 5 s");
  w.fail_now("a second reason");
  std::this_thread::sleep_for(10ms);
  EXPECT_EQ(aborts, 1);
  EXPECT_EQ(polls_after, 0);
  EXPECT_EQ(w.pending(), 0u);
  try {
    w.check();
    FAIL() << "no error remembered";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "NCCL setup on the NCCL group of 2 rank(s) did not finish within 5 s");
  }
}

TEST(CompletionWatchdog, RejectsANonPositiveTimeout) {
  EXPECT_THROW(CompletionWatchdog(0.0, nullptr), Error);
}

}  // namespace
}  // namespace tessera
