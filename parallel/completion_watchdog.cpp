#include "parallel/completion_watchdog.h"

#include <sstream>

#include "kernels/error.h"

namespace tessera {

CompletionWatchdog::CompletionWatchdog(double timeout_seconds, std::function<void()> abort,
                                       std::chrono::microseconds poll_interval)
    : timeout_(timeout_seconds), abort_(std::move(abort)), interval_(poll_interval) {
  TESSERA_CHECK(timeout_seconds > 0,
                "a watchdog timeout must be positive, got " << timeout_seconds);
  thread_ = std::thread([this] { run(); });
}

CompletionWatchdog::~CompletionWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void CompletionWatchdog::watch(std::string what, Poll poll) {
  std::lock_guard<std::mutex> lock(mu_);
  TESSERA_CHECK_IO(error_.empty(), error_);
  items_.push_back({std::move(what), std::move(poll), std::chrono::steady_clock::now()});
  changed_.notify_all();
}

void CompletionWatchdog::check() const {
  std::lock_guard<std::mutex> lock(mu_);
  TESSERA_CHECK_IO(error_.empty(), error_);
}

bool CompletionWatchdog::failed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !error_.empty();
}

size_t CompletionWatchdog::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return items_.size();
}

void CompletionWatchdog::wait_all() {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return items_.empty() || !error_.empty(); });
  TESSERA_CHECK_IO(error_.empty(), error_);
}

void CompletionWatchdog::fail_now(const std::string& message) {
  std::lock_guard<std::mutex> lock(mu_);
  fail(message);
}

void CompletionWatchdog::fail(const std::string& message) {
  if (error_.empty()) {
    error_ = message;
    if (abort_) abort_();  // the stuck work ends, so whoever waits on it returns
  }
  items_.clear();
  changed_.notify_all();
}

void CompletionWatchdog::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (items_.empty()) {
      changed_.wait(lock, [&] { return stop_ || !items_.empty(); });
      continue;
    }
    // The oldest item first: work on one stream finishes in order.
    Item& item = items_.front();
    std::string why;
    const State state = item.poll(why);
    if (state == State::kDone) {
      items_.pop_front();
      changed_.notify_all();
      continue;
    }
    if (state == State::kFailed) {
      fail(item.what + " failed: " + why);
      continue;
    }
    const auto waited = std::chrono::steady_clock::now() - item.since;
    if (waited > timeout_) {
      std::ostringstream m;
      m << item.what << " did not finish within " << timeout_.count()
        << " s (a peer rank is stuck, gone, or never joined)";
      fail(m.str());
      continue;
    }
    changed_.wait_for(lock, interval_, [&] { return stop_; });
  }
}

}  // namespace tessera
