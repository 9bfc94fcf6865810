// RunScope: which run a thread is executing, for the components runs share.
//
//   // The engine, on the thread that executes a run:
//   RunScope scope(&observer);
//   RETURN_IF_ERROR(RunBlock(*root, components, state, context));
//   double mean = scope.mean_batch_rows();   // what the run's model calls saw
//
//   // A component that batches model calls across runs (BatchedDenoiser):
//   RunScope* run = RunScope::Current();      // null outside a run
//   run->Join(member);                        // told when the run ends
//
// Step-level batching (Note [step batching] in
// blocks/diffusion/batched_denoiser.h) lives behind a component's
// interface: a block calls its denoiser as it always has, and the denoiser
// learns from the thread's RunScope which run is calling, so it can wait
// for the other runs in flight before it launches a batch, and stop waiting
// for one that has ended.
//
// Thread-safety: a RunScope belongs to the thread that created it, and every
// method but observer() is called on that thread. Members are told of the
// run's end on that thread too, in the destructor.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/strings/string_view.h"

namespace loopserve {

// How model calls are batched across runs: the server's --max_batch_size,
// --batch_window_ms and --batch_lanes, handed to component factories
// (ComponentContext).
struct BatchingOptions {
  // Rows one model call may hold; 1 turns batching off.
  int64_t max_batch_size = 1;
  // How long a call waits for the other runs in flight before its batch
  // launches without them.
  std::chrono::microseconds window{1000};
  // Batches of one model that may run at once (Triton's model instances):
  // a CPU runs small forwards side by side on its cores, a GPU is best fed
  // one large batch at a time.
  int lanes = 1;
};

class RunScope {
 public:
  // What the engine hears of the batched model calls of its runs (the
  // loopserve_batch_* metrics). Called on the runs' threads; must be safe
  // from any number of them.
  class Observer {
   public:
    virtual ~Observer() = default;
    // This run launched a model call of `rows` rows (its own and others')
    // on `component`.
    virtual void OnBatchLaunched(absl::string_view component, int64_t rows) = 0;
    // This run's call waited `seconds` for its batch to launch.
    virtual void OnBatchWait(absl::string_view component, double seconds) = 0;
  };

  // Something shared across runs that must know when a run ends.
  class Member {
   public:
    virtual ~Member() = default;
    virtual void OnRunEnd(const RunScope& run) = 0;
  };

  // This thread executes one run from now until the scope ends. `observer`
  // (not owned, may be null) must outlive the scope.
  explicit RunScope(Observer* observer = nullptr);
  // Tells every member that the run has ended, then restores the scope this
  // one replaced.
  ~RunScope();
  RunScope(const RunScope&) = delete;
  RunScope& operator=(const RunScope&) = delete;

  // The scope of the run this thread executes; null outside one.
  static RunScope* Current();

  // `member` is told when this run ends. Join each member once.
  void Join(std::shared_ptr<Member> member);

  // One model call of this run ran in a batch of `rows` rows.
  void CountModelCall(int64_t rows) {
    ++model_calls_;
    batch_rows_ += rows;
  }
  int64_t model_calls() const { return model_calls_; }
  // The mean rows of the model calls this run was part of; 0 when it made
  // none.
  double mean_batch_rows() const {
    return model_calls_ == 0 ? 0.0
                             : static_cast<double>(batch_rows_) / model_calls_;
  }

  Observer* observer() const { return observer_; }

 private:
  Observer* const observer_;
  RunScope* const previous_;
  std::vector<std::shared_ptr<Member>> members_;
  int64_t model_calls_ = 0;
  int64_t batch_rows_ = 0;
};

}  // namespace loopserve
