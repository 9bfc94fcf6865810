#include "engine/run.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/core/block.h"
#include "blocks/core/loop.h"
#include "blocks/core/run_scope.h"
#include "engine/metrics.h"
#include "engine/run_log.h"
#include "engine/run_request.h"
#include "util/user_text.h"

namespace loopserve {
namespace {

double Seconds(Run::Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// A run's inputs for an error message: the request's and those the server
// filled in (`resolved`); numbers and text as given, tensors by datatype
// and shape; sorted.
std::string DescribeInputs(
    const google::protobuf::Map<std::string, v1::Value>& given,
    const google::protobuf::Map<std::string, v1::Value>& resolved) {
  std::vector<std::string> parts;
  auto describe = [&parts](const std::string& name, const v1::Value& value) {
    std::string text;
    switch (value.kind_case()) {
      case v1::Value::kInt64Value:
        text = absl::StrCat(value.int64_value());
        break;
      case v1::Value::kDoubleValue:
        text = absl::StrCat(value.double_value());
        break;
      case v1::Value::kBoolValue:
        text = value.bool_value() ? "true" : "false";
        break;
      case v1::Value::kStringValue:
        text = QuoteUserText(value.string_value());
        break;
      case v1::Value::kTensor:
        text = absl::StrCat("a ", value.tensor().datatype(), " [",
                            absl::StrJoin(value.tensor().shape(), ","),
                            "] tensor");
        break;
      default:
        text = "a list";
    }
    parts.push_back(absl::StrCat(QuoteUserText(name), "=", text));
  };
  for (const auto& [name, value] : given) describe(name, value);
  for (const auto& [name, value] : resolved) {
    if (!given.contains(name)) describe(name, value);
  }
  std::sort(parts.begin(), parts.end());
  return absl::StrJoin(parts, ", ");
}

// Note [diverged runs]
// ~~~~~~~~~~~~~~~~~~~~
// A run whose loop carries NaN or Inf (guidance too strong, latents too
// large, a model that overflows) would go on to the end and return a
// constant image with OK. After each iteration the floating-point values
// the loop carries are checked, and a run that diverged ends with
// INVALID_ARGUMENT naming the loop, the iteration, the value and the
// inputs that led there (described only then). One reduction per carried
// tensor, read back at once: about 3 % of a digits-ddim step on the CPU,
// nothing beside a UNet's (docs/performance.md); on a GPU it is a
// synchronisation per step.
class DivergenceGuard final : public IterationObserver {
 public:
  DivergenceGuard(IterationObserver& next,
                  const google::protobuf::Map<std::string, v1::Value>& given,
                  const google::protobuf::Map<std::string, v1::Value>& resolved)
      : next_(next), given_(given), resolved_(resolved) {}

  absl::Status OnIteration(const LoopIteration& iteration) override {
    for (const OutputParam& output :
         iteration.loop.signature().intermediate_outputs) {
      const c10::IValue* value = iteration.state.Find(output.name);
      if (value == nullptr || !value->isTensor()) continue;
      const at::Tensor& tensor = value->toTensor();
      if (!tensor.defined() || !at::isFloatingType(tensor.scalar_type()) ||
          at::isfinite(tensor).all().item<bool>()) {
        continue;
      }
      return absl::InvalidArgumentError(
          absl::StrCat("the run diverged: after iteration ", iteration.index.i,
                       " of loop '", iteration.loop.path(), "', '", output.name,
                       "' holds NaN or Inf; the inputs that led there: ",
                       DescribeInputs(given_, resolved_)));
    }
    return next_.OnIteration(iteration);
  }

 private:
  IterationObserver& next_;
  const google::protobuf::Map<std::string, v1::Value>& given_;
  const google::protobuf::Map<std::string, v1::Value>& resolved_;
};

}  // namespace

std::string RunClient::Key() const {
  if (!principal.empty()) return absl::StrCat("principal:", principal);
  // ipv4:10.0.0.7:51234, ipv6:[::1]:51234: the port is the connection's.
  absl::string_view host = peer;
  if (absl::StartsWith(host, "ipv4:") || absl::StartsWith(host, "ipv6:")) {
    host = host.substr(0, host.rfind(':'));
  }
  return std::string(host);
}

Run::Run(const RunEnvironment& environment, std::string id,
         std::shared_ptr<const v1::RunRequest> request,
         const Pipeline& pipeline, PipelineMetrics& metrics,
         StreamSelection selection, RunEventWriter* front,
         Clock::time_point accepted, RunClient client,
         std::optional<ResumeSpec> resume)
    : environment_(environment),
      id_(std::move(id)),
      request_(std::move(request)),
      pipeline_(pipeline),
      metrics_(metrics),
      front_(front),
      client_(std::move(client)),
      resume_(std::move(resume)),
      stream_(id_, request_->request_id(), std::move(selection),
              environment.stream, this, &metrics),
      accepted_(accepted) {}

absl::Status Run::Submit(RunExecutor& executor) {
  prometheus::Gauge& queued = environment_.metrics.queued_runs();
  queued.Increment();
  absl::Status status =
      executor.Submit([self = shared_from_this()] { self->Execute(); });
  if (!status.ok()) queued.Decrement();
  return status;
}

void Run::Execute() {
  environment_.metrics.queued_runs().Decrement();
  const Clock::time_point start = Clock::now();
  // A resumed run's inputs the request leaves out are its checkpoint's.
  const google::protobuf::Map<std::string, v1::Value> resolved =
      resume_.has_value() ? resume_->resolved
                          : ResolveInputs(pipeline_, *request_);
  v1::RunStarted started;
  *started.mutable_resolved_inputs() = resolved;
  if (resume_.has_value()) {
    started.set_first_iteration(resume_->checkpoint.iteration() + 1);
    started.set_resumed_loop(resume_->checkpoint.loop());
  }
  // Cancelled while queued: the stream has finished already.
  if (!stream_.Begin(Milliseconds(start - accepted_), std::move(started))) {
    return;
  }
  started_ = true;
  start_time_ = start;
  metrics_.queue_duration->Observe(Seconds(start_time_ - accepted_));
  metrics_.active_runs->Increment();

  // The inputs' one copy happens here, on the run's thread.
  const c10::Device device = environment_.device;
  absl::StatusOr<PipelineState> state =
      DecodeInputs(*request_, resolved, environment_.limits, device);
  absl::Status status = state.status();
  if (status.ok() && resume_.has_value()) {
    status = RestoreCheckpoint(*resume_, pipeline_, environment_.limits, device,
                               *state);
  }
  std::optional<CheckpointWriter> checkpoints;
  if (status.ok() && request_->stream().checkpoints()) {
    google::protobuf::Map<std::string, v1::Value> inputs = request_->inputs();
    for (const auto& [name, value] : resolved) inputs[name] = value;
    checkpoints.emplace(pipeline_, environment_.checkpoint_key, id_,
                        std::move(inputs), device);
    stream_.set_checkpointer([&checkpoints, &state](const LoopIteration& it) {
      return checkpoints->Make(it, *state);
    });
  }
  DivergenceGuard guard(stream_, request_->inputs(), resolved);
  if (status.ok()) {
    RunRecorder recorder(metrics_, accepted_);
    RunContext context{
        .observer = &guard, .device = device, .timer = &recorder};
    // Ends with the block tree, so that no batch waits for this run while
    // it streams its result.
    RunScope scope(&environment_.metrics);
    status = RunBlock(*pipeline_.root, pipeline_.components, *state, context);
    mean_batch_size_ = scope.mean_batch_rows();
  }
  stream_.set_checkpointer(nullptr);

  end_time_ = Clock::now();
  // Metrics first, so that they hold the run once its client has heard.
  metrics_.run_duration->Observe(Seconds(end_time_ - start_time_));
  metrics_.active_runs->Decrement();
  v1::RunStats stats;
  stats.set_iterations(stream_.iterations());
  stats.set_queue_ms(Milliseconds(start_time_ - accepted_));
  stats.set_run_ms(Milliseconds(end_time_ - start_time_));
  stats.set_mean_batch_size(mean_batch_size_);
  if (state.ok()) {
    stream_.End(status, *state, stats);
  } else {
    stream_.End(status, PipelineState(), stats);
  }
}

void Run::StartWrite(std::shared_ptr<const v1::RunEvent> event) {
  front_->StartWrite(std::move(event));
}

void Run::Finish(const absl::Status& status) {
  finish_time_ = Clock::now();
  front_->Finish(status);
}

void Run::Report(const absl::Status& seen) {
  ReportOutcome(
      environment_.metrics,
      {.pipeline = &metrics_,
       .run_id = id_,
       .request_id = request_->request_id(),
       .principal = client_.principal,
       .peer = client_.peer,
       .status = seen,
       .queue_ms =
           Milliseconds((started_ ? start_time_ : finish_time_) - accepted_),
       .run_ms = started_ ? Milliseconds(end_time_ - start_time_) : -1,
       .iterations = started_ ? stream_.iterations() : 0,
       .mean_batch_size = mean_batch_size_});
}

}  // namespace loopserve
