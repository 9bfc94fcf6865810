// RunLog: how a run's outcome is counted and logged, once per Run call,
// from one place.
//
//   ReportOutcome(metrics, {.pipeline = &series, .run_id = "run-7",
//                           .request_id = "abc", .status = status,
//                           .queue_ms = 0.1, .run_ms = 12.5});
//
// Every call is counted in loopserve_runs_total{pipeline, code} with the
// code its client saw; one refused before it was queued also in
// loopserve_rejected_runs_total{reason}. A call that did not end OK writes
// one structured log line through glog: a warning (an error for a server
// fault: INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED):
//
//   W20261201 21:24:29.701180  1972 run_log.cc:72] run ended run_id=run-1
//     request_id=req-42 pipeline=gmm-ddim code=INVALID_ARGUMENT
//     block=gmm-ddim/prepare_latents queue_ms=0.055185 run_ms=1.48427
//     iterations=0 message="block 'gmm-ddim/prepare_latents' ..."
//
// A run that called a denoiser adds mean_batch_size= (RunStats'). Last
// come who sent it: principal= (a token's name, a client certificate's
// common name) when the server authenticates, and peer= (its address).
//
// An OK run logs the same line at verbosity 1 (--log_level=debug).
//
// Thread-safety: ReportOutcome and SetLogLevel may be called from any
// thread.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/metrics.h"

namespace loopserve {

struct RunOutcome {
  // The pipeline's series ("unknown" for a name nobody serves).
  PipelineMetrics* pipeline = nullptr;
  // Empty for a call refused before it became a run.
  absl::string_view run_id{};
  absl::string_view request_id{};
  // Who sent it (RunClient); empty when unknown.
  absl::string_view principal{};
  absl::string_view peer{};
  // What the client was told.
  absl::Status status{};
  // Whether it was refused before it was queued.
  bool refused = false;
  // Negative when the run never got that far.
  double queue_ms = -1;
  double run_ms = -1;
  int64_t iterations = 0;
  // The mean rows of its denoiser calls (RunStats.mean_batch_size); 0:
  // none.
  double mean_batch_size = 0;
};

void ReportOutcome(Metrics& metrics, const RunOutcome& outcome);

// The log line ReportOutcome writes, without glog's prefix.
std::string FormatOutcome(const RunOutcome& outcome);

// Sets up glog for the process (to stderr) at `level`: "debug" (OK runs
// too), "info", "warning" or "error"; INVALID_ARGUMENT naming the accepted
// levels otherwise. Call once, from main.
absl::Status InitLogging(const char* program, absl::string_view level);

}  // namespace loopserve
