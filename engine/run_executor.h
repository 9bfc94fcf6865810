// RunExecutor: the threads pipelines run on, never gRPC's.
//
//   RunExecutor executor({.max_concurrent_runs = 4, .max_queued_runs = 16});
//   RETURN_IF_ERROR(executor.Submit([stream] { stream->Execute(); }));
//
// A fixed set of workers (max_concurrent_runs) takes tasks from a bounded
// queue (max_queued_runs). Submit never blocks: past the bound it returns
// RESOURCE_EXHAUSTED, which is how a server says "busy" instead of piling up
// work. Each worker runs under c10::InferenceMode.
//
// Thread-safety: Submit, running and queued may be called from any thread.
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace loopserve {

struct RunExecutorOptions {
  int max_concurrent_runs = 4;
  int max_queued_runs = 64;
};

class RunExecutor {
 public:
  explicit RunExecutor(RunExecutorOptions options);
  // Runs what is queued, then joins the workers.
  ~RunExecutor();

  RunExecutor(const RunExecutor&) = delete;
  RunExecutor& operator=(const RunExecutor&) = delete;

  // Queues `task`. RESOURCE_EXHAUSTED when every worker is busy and the
  // queue is full; UNAVAILABLE after Shutdown.
  absl::Status Submit(std::function<void()> task);

  // Stops accepting tasks, lets the queued ones run, and joins the workers.
  // Call from one thread (the owner's); the destructor calls it too.
  void Shutdown();

  // Tasks running now.
  int running() const;
  // Waits until no task is queued or running, or `timeout` passes; true
  // when none is. A run cancelled while queued leaves its task in the queue
  // (a worker skips it at once), and that task holds queue room until then.
  bool WaitForIdle(absl::Duration timeout) const;

 private:
  void Work();

  const RunExecutorOptions options_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace loopserve
