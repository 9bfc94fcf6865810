// LoopClient: a C++ client of loopserve's LoopPipelineService.
//
//   ASSIGN_OR_RETURN(auto client, LoopClient::Connect("localhost:50051"));
//   v1::RunRequest request;
//   request.set_pipeline("seed-loop");
//   (*request.mutable_inputs())["num_steps"].set_int64_value(5);
//   (*request.mutable_inputs())["x"].set_int64_value(0);
//   ASSIGN_OR_RETURN(v1::RunResult result,
//                    client->Run(request, {.on_iteration =
//                        [](const v1::Iteration& it) { ... }}));
//
// Errors are the server's status as absl::Status (same code and message).
//
// Thread-safety: a LoopClient may be used from many threads at once; each
// call blocks its caller. RunCancellation::Cancel may be called from any
// thread, including from inside a callback.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "loopserve/v1/loopserve.grpc.pb.h"

namespace loopserve {

// Lets another thread (or a callback) cancel a Run in progress.
class RunCancellation {
 public:
  void Cancel();
  bool cancelled();

 private:
  friend class LoopClient;
  void Attach(grpc::ClientContext* context);
  void Detach();

  absl::Mutex mu_;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

struct RunCallbacks {
  std::function<void(const v1::RunStarted&)> on_started{};
  // Once per iteration received, in order.
  std::function<void(const v1::Iteration&)> on_iteration{};
  // Once per batch received, before its iterations (for tests and tools
  // that care how iterations were packed).
  std::function<void(const v1::IterationBatch&)> on_batch{};
};

struct ConnectOptions {
  // The gRPC load-balancing policy: "" (gRPC's default, pick_first: one
  // server) or "round_robin" (every address the target resolves to, a call
  // each in turn). With round_robin, servers whose readiness is NOT_SERVING
  // (loading, draining) get no calls: the channel watches their health.
  std::string lb_policy{};
  // TLS: the CA bundle that signed the server's certificate (PEM); empty:
  // plaintext. With cert_file and key_file, the client's own certificate
  // too (mTLS).
  std::string tls_ca_file{};
  std::string tls_cert_file{};
  std::string tls_key_file{};
  // Sent as `authorization: Bearer TOKEN` with every call; empty: none.
  std::string token{};
};

struct RunCallOptions {
  // No deadline when absent.
  std::optional<absl::Duration> timeout{};
  RunCancellation* cancellation = nullptr;  // not owned; may be null
};

class LoopClient {
 public:
  // `token`: sent as `authorization: Bearer TOKEN` with every call.
  explicit LoopClient(std::shared_ptr<grpc::Channel> channel,
                      std::string token = "");

  // A client of the server(s) at `target`, any gRPC target: host:port,
  // dns:///loopserve-headless:50051 (every replica behind a headless
  // Service), ipv4:10.0.0.1:50051,10.0.0.2:50051. Over a channel that
  // accepts messages of any size, plaintext unless options.tls_ca_file is
  // set. INVALID_ARGUMENT for an unknown lb_policy or a TLS file that
  // cannot be read.
  static absl::StatusOr<std::unique_ptr<LoopClient>> Connect(
      const std::string& target, const ConnectOptions& options = {});

  absl::StatusOr<std::vector<v1::PipelineSummary>> ListPipelines();
  absl::StatusOr<v1::PipelineDescription> DescribePipeline(
      const std::string& name);

  // Runs `request`, calling `callbacks` as events arrive; the result when
  // the stream ends OK, else its status.
  absl::StatusOr<v1::RunResult> Run(const v1::RunRequest& request,
                                    const RunCallbacks& callbacks = {},
                                    const RunCallOptions& options = {});

  // The health of `service` ("" for the whole server).
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(
      const std::string& service = "");

 private:
  // A context for one call, carrying the token.
  void Prepare(grpc::ClientContext& context) const;

  std::shared_ptr<grpc::Channel> channel_;
  const std::string token_;
  std::unique_ptr<v1::LoopPipelineService::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// grpc::Status -> absl::Status: the same code and message.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace loopserve
