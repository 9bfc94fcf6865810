// StreamEncoder: the threads that finish streamed iterations off the loop's
// thread: they wait for values still on their way off the device and
// render previews (Note [copies off the device] in host_copy.h), then start
// the write. One per engine, shared by its runs; each run has at most one
// task queued or running (its one write in flight), so a run's iterations
// stay in order.
//
// Thread-safety: Post from any thread.
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace loopserve {

class StreamEncoder {
 public:
  explicit StreamEncoder(int threads);
  // Runs what is queued, then joins the threads.
  ~StreamEncoder();
  StreamEncoder(const StreamEncoder&) = delete;
  StreamEncoder& operator=(const StreamEncoder&) = delete;

  void Post(std::function<void()> task);

 private:
  void Work();

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace loopserve
