#include "engine/checkpoint.h"

#include <ATen/ATen.h>

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "blocks/core/loop.h"
#include "blocks/core/resume.h"
#include "blocks/core/run_state.h"
#include "engine/digest.h"
#include "engine/state_codec.h"
#include "google/protobuf/util/message_differencer.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

std::string DeviceType(c10::Device device) {
  return c10::DeviceTypeName(device.type(), /*lower_case=*/true);
}

absl::Status Failed(absl::string_view name, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat("value '", name, "': ", status.message()));
}

// Encodes each of `values` whose name `keep` accepts into `out`.
template <typename Values, typename Keep>
absl::Status EncodeValues(
    const Values& values, Keep keep,
    google::protobuf::Map<std::string, v1::StateValue>& out) {
  for (const auto& [name, value] : values) {
    if (!keep(name)) continue;
    if (absl::Status s = EncodeStateValue(value, out[name]); !s.ok()) {
      return Failed(name, s);
    }
  }
  return absl::OkStatus();
}

}  // namespace

// ---- CheckpointWriter ----

CheckpointWriter::CheckpointWriter(
    const Pipeline& pipeline, const CheckpointKey& key, std::string run_id,
    google::protobuf::Map<std::string, v1::Value> inputs, c10::Device device)
    : key_(key) {
  fixed_.set_pipeline(pipeline.name);
  fixed_.set_fingerprint(pipeline.fingerprint);
  fixed_.set_device_type(DeviceType(device));
  fixed_.set_run_id(std::move(run_id));
  *fixed_.mutable_inputs() = std::move(inputs);
}

absl::StatusOr<std::string> CheckpointWriter::Make(
    const LoopIteration& iteration, const PipelineState& state) {
  const std::vector<OutputParam>& carried =
      iteration.loop.signature().intermediate_outputs;
  auto is_carried = [&carried](const std::string& name) {
    return std::any_of(
        carried.begin(), carried.end(),
        [&name](const OutputParam& p) { return p.name == name; });
  };
  // Note [checkpoint encoding]: the intermediates are not replaced while a
  // loop runs, so most are encoded once per loop; but objects that change
  // in place (a generator, a RunState) are encoded at every checkpoint.
  auto is_stateful = [&state](const std::string& name) {
    const c10::IValue* value = state.GetIntermediate(name);
    return value != nullptr &&
           (value->isGenerator() || AsRunState(*value) != nullptr);
  };
  if (fixed_bytes_.empty() || fixed_loop_ != iteration.loop.path()) {
    fixed_.clear_intermediates();
    RETURN_IF_ERROR(EncodeValues(
        state.intermediates(),
        [&](const std::string& name) {
          return !is_carried(name) && !is_stateful(name);
        },
        *fixed_.mutable_intermediates()));
    fixed_loop_ = iteration.loop.path();
    fixed_bytes_ = fixed_.SerializeAsString();
  }
  v1::Checkpoint step;
  step.set_loop(iteration.loop.path());
  step.set_iteration(iteration.index.i);
  step.set_total(iteration.index.total);
  RETURN_IF_ERROR(EncodeValues(
      state.intermediates(),
      [&](const std::string& name) {
        return !is_carried(name) && is_stateful(name);
      },
      *step.mutable_intermediates()));
  RETURN_IF_ERROR(EncodeValues(iteration.state.entries(), is_carried,
                               *step.mutable_carried()));
  return key_.Sign(absl::StrCat(fixed_bytes_, step.SerializeAsString()));
}

// ---- Resuming ----

absl::StatusOr<ResumeSpec> PrepareResume(const Pipeline& pipeline,
                                         v1::Checkpoint checkpoint,
                                         const v1::RunRequest& request,
                                         c10::Device device) {
  auto failed = [&](absl::string_view why) {
    return absl::FailedPreconditionError(
        absl::StrCat("pipeline '", pipeline.name, "': resume_from: ", why));
  };
  if (checkpoint.pipeline() != pipeline.name) {
    return failed(absl::StrCat("the checkpoint is of pipeline '",
                               checkpoint.pipeline(), "'"));
  }
  if (checkpoint.fingerprint() != pipeline.fingerprint) {
    return failed(absl::StrCat(
        "the checkpoint was made by another configuration of this pipeline "
        "(its blocks, components or model files differ: fingerprint ",
        absl::BytesToHexString(checkpoint.fingerprint()).substr(0, 12),
        ", here ", absl::BytesToHexString(pipeline.fingerprint).substr(0, 12),
        ")"));
  }
  if (checkpoint.device_type() != DeviceType(device)) {
    return failed(absl::StrCat("the checkpoint was made on a ",
                               checkpoint.device_type(),
                               " device; this server runs on ", device.str(),
                               ", and a run continues exactly only on the "
                               "device type it started on"));
  }

  ResumeSpec spec;
  absl::flat_hash_set<std::string> changed;
  for (const auto& [name, value] : checkpoint.inputs()) {
    auto given = request.inputs().find(name);
    if (given == request.inputs().end()) {
      spec.resolved[name] = value;
    } else if (!google::protobuf::util::MessageDifferencer::Equals(
                   given->second, value)) {
      // (A fork's input equal to the checkpoint's changes nothing.)
      changed.insert(name);
    }
  }
  for (const auto& [name, value] : request.inputs()) {
    if (!checkpoint.inputs().contains(name)) changed.insert(name);
  }
  absl::flat_hash_set<std::string> stateful;
  for (const auto& [name, value] : checkpoint.intermediates()) {
    if (value.has_cpu_generator() || value.has_component_state()) {
      stateful.insert(name);
    }
  }
  absl::StatusOr<ResumePlan> plan =
      PlanResume(*pipeline.root, checkpoint.loop(), changed, stateful);
  if (!plan.ok()) {
    return absl::Status(
        plan.status().code(),
        absl::StrCat("pipeline '", pipeline.name,
                     "': resume_from: ", plan.status().message()));
  }
  if (checkpoint.iteration() < 0)
    return failed("the checkpoint's iteration is negative");
  spec.changed = std::move(changed);
  spec.carried_names = std::move(plan->carried_names);
  spec.checkpoint = std::move(checkpoint);
  return spec;
}

absl::Status RestoreCheckpoint(const ResumeSpec& spec, const Pipeline& pipeline,
                               const DecodeLimits& limits, c10::Device device,
                               PipelineState& state) {
  // The intermediates the blocks before the loop made may hold Inf (a
  // schedule's first sigma): what the server computed. The carried values
  // may not: a run that carried NaN or Inf ended (Note [diverged runs] in
  // engine/run.cc) before its checkpoint was made, so a checkpoint holding
  // one was forged (Note [a checkpoint is a request too] in
  // engine/engine.cc). Those are checked as inputs are.
  DecodeLimits computed_limits = limits;
  computed_limits.allow_non_finite = true;
  const v1::Checkpoint& checkpoint = spec.checkpoint;
  auto decode =
      [&](const std::string& name, const v1::StateValue& value,
          const DecodeLimits& value_limits) -> absl::StatusOr<c10::IValue> {
    absl::StatusOr<c10::IValue> decoded =
        DecodeStateValue(value, pipeline.components, value_limits, device);
    if (!decoded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("pipeline '", pipeline.name, "': resume_from: value '",
                       name, "': ", decoded.status().message()));
    }
    return decoded;
  };
  for (const auto& [name, value] : checkpoint.intermediates()) {
    ASSIGN_OR_RETURN(c10::IValue decoded, decode(name, value, computed_limits));
    state.SetIntermediate(name, std::move(decoded));
  }
  LoopResume resume{.loop = checkpoint.loop(),
                    .next_iteration = checkpoint.iteration() + 1,
                    .carried = {},
                    .carried_names = spec.carried_names,
                    .changed = spec.changed};
  for (const auto& [name, value] : checkpoint.carried()) {
    ASSIGN_OR_RETURN(c10::IValue decoded, decode(name, value, limits));
    resume.carried.Set(name, std::move(decoded));
  }
  state.SetResume(std::move(resume));
  return absl::OkStatus();
}

}  // namespace loopserve
