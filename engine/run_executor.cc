#include "engine/run_executor.h"

#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"

namespace loopserve {

RunExecutor::RunExecutor(RunExecutorOptions options) : options_(options) {
  workers_.reserve(options_.max_concurrent_runs);
  for (int i = 0; i < options_.max_concurrent_runs; ++i) {
    workers_.emplace_back([this] { Work(); });
  }
}

RunExecutor::~RunExecutor() { Shutdown(); }

absl::Status RunExecutor::Submit(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) {
    return absl::UnavailableError("the server is shutting down");
  }
  const int waiting = static_cast<int>(queue_.size());
  if (running_ + waiting >=
      options_.max_concurrent_runs + options_.max_queued_runs) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server is busy: ", running_, " runs running and ", waiting,
        " queued (--max_concurrent_runs=", options_.max_concurrent_runs,
        ", --max_queued_runs=", options_.max_queued_runs, ")"));
  }
  queue_.push_back(std::move(task));
  return absl::OkStatus();
}

void RunExecutor::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
  }
  for (std::thread& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  workers_.clear();
}

int RunExecutor::running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

bool RunExecutor::WaitForIdle(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(
      absl::Condition(
          +[](const RunExecutor* self)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
                 return self->queue_.empty() && self->running_ == 0;
               },
          this),
      timeout);
}

void RunExecutor::Work() {
  c10::InferenceMode inference_mode;
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](RunExecutor* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return !self->queue_.empty() || self->shutting_down_;
          },
          this));
      if (queue_.empty()) return;  // shutting down, nothing left
      task = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    task();
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

}  // namespace loopserve
