// RunHandle: a front's hold on its run, for fronts whose writes complete on
// their own schedule (OIP, HTTP). Engine::StartRun queues the run, and the
// run may start writing before StartRun has returned it; a write that
// completes then has no run to tell yet. RunHandle keeps that completion,
// and a cancel, until Set hands it the run.
//
//   RunHandle handle;
//   absl::StatusOr<std::shared_ptr<Run>> run = engine.StartRun(..., &writer);
//   if (run.ok()) handle.Set(*run);
//   // the writer, whenever a write completes:
//   handle.OnWriteDone(ok);
//
// Thread-safety: every method from any thread.
#pragma once

#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "engine/run.h"

namespace loopserve {

class RunHandle {
 public:
  // Gives the handle its run, and the run what happened before.
  void Set(std::shared_ptr<Run> run) ABSL_LOCKS_EXCLUDED(mu_) {
    std::optional<bool> write_done;
    std::optional<absl::Status> cancel;
    {
      absl::MutexLock lock(&mu_);
      run_ = run;
      write_done.swap(write_done_);
      cancel.swap(cancel_);
    }
    if (cancel.has_value()) run->Cancel(*std::move(cancel));
    if (write_done.has_value()) run->OnWriteDone(*write_done);
  }

  // Run::OnWriteDone, now or once the run is set.
  void OnWriteDone(bool ok) ABSL_LOCKS_EXCLUDED(mu_) {
    std::shared_ptr<Run> run;
    {
      absl::MutexLock lock(&mu_);
      if (run_ == nullptr) {
        write_done_ = ok;
        return;
      }
      run = run_;
    }
    run->OnWriteDone(ok);
  }

  // Run::Cancel, now or once the run is set. Never under a lock the run's
  // Finish takes: a queued run finishes inside Cancel.
  void Cancel(absl::Status status) ABSL_LOCKS_EXCLUDED(mu_) {
    std::shared_ptr<Run> run;
    {
      absl::MutexLock lock(&mu_);
      if (run_ == nullptr) {
        cancel_ = std::move(status);
        return;
      }
      run = run_;
    }
    run->Cancel(std::move(status));
  }

  // The run; null before Set.
  std::shared_ptr<Run> get() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return run_;
  }

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<Run> run_ ABSL_GUARDED_BY(mu_);
  std::optional<bool> write_done_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> cancel_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loopserve
