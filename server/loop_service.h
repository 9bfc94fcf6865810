// LoopService: the loopserve.v1.LoopPipelineService implementation, on gRPC's
// callback API.
//
// Until Serve installs the catalog (while the server loads its pipelines)
// every call gets UNAVAILABLE. ListPipelines and DescribePipeline answer
// from the catalog. Run validates
// the request (ValidateRun), then hands the run to the RunExecutor; a
// RunReactor (one ServerWriteReactor per call) streams its events through a
// RunStream. Nothing here blocks a gRPC thread, and the loop never runs on
// one.
//
// Every Run call is counted in `metrics` (server/metrics.h).
//
// Thread-safety: all methods may be called from any thread. The catalog,
// executor and metrics must outlive the service.
#pragma once

#include <c10/core/Device.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "blocks/core/components.h"
#include "loopserve/v1/loopserve.grpc.pb.h"
#include "server/metrics.h"
#include "server/pipeline_catalog.h"
#include "server/run_executor.h"
#include "server/run_request.h"
#include "server/run_stream.h"

namespace loopserve {

struct LoopServiceOptions {
  RunLimits limits;
  RunStreamOptions stream;
  // Where input tensors go before a run starts.
  c10::Device device = c10::kCPU;
};

// Run is a raw method: its events go out as ByteBuffers that reference
// tensor bytes instead of copying them (Note [zero-copy tensors]).
class LoopService final
    : public v1::LoopPipelineService::WithRawCallbackMethod_Run<
          v1::LoopPipelineService::CallbackService> {
 public:
  LoopService(RunExecutor& executor, Metrics& metrics,
              LoopServiceOptions options);

  // Starts serving `catalog`; before this, every call gets UNAVAILABLE.
  // Once only.
  void Serve(const PipelineCatalog& catalog);

  grpc::ServerUnaryReactor* ListPipelines(
      grpc::CallbackServerContext* context,
      const v1::ListPipelinesRequest* request,
      v1::ListPipelinesResponse* response) override;
  grpc::ServerUnaryReactor* DescribePipeline(
      grpc::CallbackServerContext* context,
      const v1::DescribePipelineRequest* request,
      v1::PipelineDescription* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Run(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;

  // From now on, new runs fail with UNAVAILABLE.
  void StartDraining();
  // Waits until no run is in flight, or `timeout` passes; true when none is.
  bool WaitForIdle(absl::Duration timeout);
  // Stops every run in flight at its next iteration boundary.
  void CancelAll(const absl::Status& status);

 private:
  friend class RunReactor;

  // The catalog, or UNAVAILABLE while loading.
  absl::StatusOr<const PipelineCatalog*> Catalog() const;
  // Validates `request` and queues its run, streaming to `writer` and
  // counting into `metrics`; the error that refuses it otherwise.
  absl::StatusOr<std::shared_ptr<RunStream>> StartRun(
      std::shared_ptr<const v1::RunRequest> request, RunEventWriter* writer,
      PipelineMetrics& metrics);
  void Track(const std::shared_ptr<RunStream>& stream);
  void Untrack(const std::shared_ptr<RunStream>& stream);

  std::atomic<const PipelineCatalog*> catalog_{nullptr};
  RunExecutor& executor_;
  Metrics& metrics_;
  const LoopServiceOptions options_;

  absl::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<std::shared_ptr<RunStream>> active_ ABSL_GUARDED_BY(mu_);
  uint64_t next_run_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace loopserve
