#include "runtime/request_broker.h"

#include <chrono>
#include <cstdio>

#include "runtime/openai_api.h"

namespace tessera {
namespace {

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

}  // namespace

bool ServingJob::State::ended() const {
  if (!error.empty()) return true;
  if (done.empty()) return false;  // (a copy that has not been brought up to date yet)
  for (bool d : done)
    if (!d) return false;
  return true;
}

ServingJob::ServingJob(std::vector<GenerationRequest> choices) : requests_(std::move(choices)) {
  state_.results.resize(requests_.size());
  state_.done.assign(requests_.size(), false);
}

bool ServingJob::wait(uint64_t& seen, double seconds, State& out) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return version_ != seen; });
  const bool changed = version_ != seen;
  seen = version_;
  if (out.results.size() != state_.results.size()) out.results.resize(state_.results.size());
  // Only what is new: a choice's text, tokens and log-probabilities only grow.
  for (size_t i = 0; i < state_.results.size(); ++i) {
    const GenerationResult& from = state_.results[i];
    GenerationResult& to = out.results[i];
    if (from.text.size() > to.text.size()) to.text.append(from.text, to.text.size());
    to.tokens.insert(
        to.tokens.end(),
        from.tokens.begin() + std::ptrdiff_t(std::min(to.tokens.size(), from.tokens.size())),
        from.tokens.end());
    to.logprobs.insert(
        to.logprobs.end(),
        from.logprobs.begin() + std::ptrdiff_t(std::min(to.logprobs.size(), from.logprobs.size())),
        from.logprobs.end());
    to.finish_reason = from.finish_reason;
    to.prompt_tokens = from.prompt_tokens;
    to.prefill_seconds = from.prefill_seconds;
    to.decode_seconds = from.decode_seconds;
  }
  out.done = state_.done;
  out.error = state_.error;
  out.error_status = state_.error_status;
  return changed;
}

void ServingJob::update(const std::function<void(State&)>& change) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    change(state_);
    ++version_;
  }
  cv_.notify_all();
}

RequestBroker::RequestBroker(BrokerOptions options, ServingMetrics& metrics)
    : options_(options), metrics_(metrics) {}

std::shared_ptr<ServingJob> RequestBroker::submit(std::vector<GenerationRequest> choices) {
  auto job = std::make_shared<ServingJob>(std::move(choices));
  job->arrival_ = steady_seconds();
  if (options_.request_timeout > 0) job->deadline_ = job->arrival_ + options_.request_timeout;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // (under the lock: serve() closes the inbox under it before the engine stops reading it)
    if (!accepting() || closed_) throw ApiError(503, "the server is shutting down", "server_error");
    const int64_t waiting = metrics_.engine().waiting + int64_t(inbox_.size());
    if (waiting >= options_.max_queued)
      throw ApiError(503,
                     "the server is busy: " + std::to_string(waiting) +
                         " requests are waiting to start (--max-queued-requests " +
                         std::to_string(options_.max_queued) + "); retry later",
                     "server_error", "queue_full");
    inbox_.push_back(job);
  }
  cv_.notify_one();
  return job;
}

void RequestBroker::cancel(const std::shared_ptr<ServingJob>& job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(job);
  }
  cv_.notify_one();
}

void RequestBroker::start(Engine& engine, const std::shared_ptr<ServingJob>& job) {
  {
    std::lock_guard<std::mutex> lock(active_mu_);
    active_[job.get()] = job;
  }
  job->remaining_ = int64_t(job->choices());
  for (size_t i = 0; i < job->choices(); ++i) {
    auto on_text = [job, i](const std::string& text, const GenerationResult& so_far) {
      job->update([&](ServingJob::State& s) {
        GenerationResult& r = s.results[i];
        r.text += text;
        for (size_t t = r.tokens.size(); t < so_far.tokens.size(); ++t) {
          r.tokens.push_back(so_far.tokens[t]);
          if (t < so_far.logprobs.size()) r.logprobs.push_back(so_far.logprobs[t]);
        }
        r.prompt_tokens = so_far.prompt_tokens;
      });
    };
    auto on_done = [this, job, i](int64_t, const GenerationResult& result) {
      job->update([&](ServingJob::State& s) {
        s.results[i] = result;
        s.done[i] = true;
      });
      const double now = steady_seconds();
      const int64_t n = int64_t(result.tokens.size());
      const double ttft = n > 0 ? now - result.decode_seconds - job->arrival_ : -1;
      metrics_.record_finish(result.finish_reason, result.prompt_tokens, n, ttft,
                             n > 1 ? result.decode_seconds / double(n - 1) : 0,
                             now - job->arrival_);
      if (--job->remaining_ == 0) {
        std::lock_guard<std::mutex> lock(active_mu_);
        active_.erase(job.get());
      }
    };
    try {
      job->engine_ids_.push_back(engine.submit(job->request(i), on_text, on_done));
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kInvalidInput) throw;
      job->remaining_ -= int64_t(job->choices() - i);  // never submitted
      fail(engine, job, 400, e.what());
      if (job->remaining_ == 0) {
        std::lock_guard<std::mutex> lock(active_mu_);
        active_.erase(job.get());
      }
      return;
    }
  }
}

void RequestBroker::fail(Engine& engine, const std::shared_ptr<ServingJob>& job, int status,
                         const std::string& message) {
  job->update([&](ServingJob::State& s) {
    if (s.error.empty()) {
      s.error = message;
      s.error_status = status;
    }
  });
  for (int64_t id : job->engine_ids_) engine.cancel(id);  // finished ones are ignored
}

bool RequestBroker::serve(Engine& engine, bool idle) {
  std::deque<std::shared_ptr<ServingJob>> incoming;
  std::vector<std::shared_ptr<ServingJob>> cancels;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (idle && inbox_.empty() && cancels_.empty() && !shutdown_.load())
      cv_.wait_for(lock, std::chrono::milliseconds(50));  // (a signal only sets the flag)
    incoming.swap(inbox_);
    cancels.swap(cancels_);
  }
  metrics_.set_engine(engine.scheduler_metrics(), int64_t(incoming.size()), options_.kv_blocks);
  const double now = steady_seconds();
  if (shutdown_.load() && !draining_) {
    draining_ = true;
    drain_deadline_ = now + options_.shutdown_grace;
  }
  for (const auto& job : cancels) {
    if (active_.count(job.get())) {
      for (int64_t id : job->engine_ids_) engine.cancel(id);
    } else {
      for (auto it = incoming.begin(); it != incoming.end(); ++it)
        if (*it == job) {  // gone before it started
          incoming.erase(it);
          break;
        }
    }
  }
  for (const auto& job : incoming) {
    if (draining_) {
      job->update([](ServingJob::State& s) {
        s.error = "the server is shutting down";
        s.error_status = 503;
      });
      continue;
    }
    start(engine, job);
  }
  std::vector<std::shared_ptr<ServingJob>> running;
  for (const auto& [key, job] : active_) running.push_back(job);
  for (const auto& job : running) {
    if (job->deadline_ > 0 && now >= job->deadline_)
      fail(engine, job, 504,
           "the request did not finish within --request-timeout " +
               seconds_text(options_.request_timeout) + " s");
    else if (draining_ && now >= drain_deadline_)
      fail(engine, job, 503, "the server shut down before the request finished");
  }
  metrics_.set_engine(engine.scheduler_metrics(), 0, options_.kv_blocks);
  if (!(draining_ && active_.empty())) return true;
  close(503, "the server is shutting down");  // what came in since the inbox was read
  return false;
}

void RequestBroker::close(int status, const std::string& message) {
  std::deque<std::shared_ptr<ServingJob>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    left.swap(inbox_);
  }
  {
    std::lock_guard<std::mutex> lock(active_mu_);
    for (const auto& [key, job] : active_) left.push_back(job);
  }
  for (const auto& job : left)
    job->update([&](ServingJob::State& s) {
      if (s.error.empty() && !s.ended()) {
        s.error = message;
        s.error_status = status;
      }
    });
}

}  // namespace tessera
