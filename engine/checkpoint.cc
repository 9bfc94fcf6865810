#include "engine/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "blocks/core/loop.h"
#include "blocks/core/resume.h"
#include "blocks/core/run_state.h"
#include "blocks/core/status_macros.h"
#include "engine/digest.h"

namespace loopserve {
namespace {

constexpr uint32_t kFormatVersion = 1;
// What the MAC covers besides the body: the format, so that a MAC made for
// anything else under the same key never passes.
constexpr absl::string_view kMacContext("loopserve checkpoint v1\0", 24);

std::string DeviceType(c10::Device device) {
  return c10::DeviceTypeName(device.type(), /*lower_case=*/true);
}

absl::Status Failed(absl::string_view name, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat("value '", name, "': ", status.message()));
}

// Encodes each of `values` whose name `keep` accepts into `out`.
template <typename Values, typename Keep>
absl::Status EncodeValues(const Values& values, Keep keep,
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

// ---- CheckpointKey ----

absl::StatusOr<CheckpointKey> CheckpointKey::FromBytes(std::string key) {
  if (key.size() < kMinBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a checkpoint key must have at least ", kMinBytes,
                     " bytes, got ", key.size()));
  }
  return CheckpointKey(key);
}

absl::StatusOr<CheckpointKey> CheckpointKey::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read --checkpoint_key_file '", path, "'"));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string key = text.str();
  key.erase(std::find_if(key.rbegin(), key.rend(),
                         [](unsigned char c) { return !absl::ascii_isspace(c); })
                .base(),
            key.end());
  absl::StatusOr<CheckpointKey> made = FromBytes(std::move(key));
  if (!made.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--checkpoint_key_file '", path, "': ",
                     made.status().message(),
                     " (make one with: openssl rand -hex 32 > FILE)"));
  }
  return made;
}

CheckpointKey CheckpointKey::Random() {
  std::string key(32, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(key.data()),
             static_cast<int>(key.size()));
  return CheckpointKey(key);
}

std::string CheckpointKey::Mac(absl::string_view body) const {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC_CTX* context = EVP_MAC_CTX_new(mac);
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end()};
  unsigned char out[EVP_MAX_MD_SIZE];
  size_t size = 0;
  EVP_MAC_init(context, key_.data(), key_.size(), params);
  EVP_MAC_update(context,
                 reinterpret_cast<const unsigned char*>(kMacContext.data()),
                 kMacContext.size());
  EVP_MAC_update(context, reinterpret_cast<const unsigned char*>(body.data()),
                 body.size());
  EVP_MAC_final(context, out, &size, sizeof(out));
  EVP_MAC_CTX_free(context);
  EVP_MAC_free(mac);
  return std::string(reinterpret_cast<const char*>(out), size);
}

std::string CheckpointKey::Sign(std::string serialized_checkpoint) const {
  v1::SignedCheckpoint signed_checkpoint;
  signed_checkpoint.set_version(kFormatVersion);
  signed_checkpoint.set_hmac_sha256(Mac(serialized_checkpoint));
  signed_checkpoint.set_checkpoint(std::move(serialized_checkpoint));
  return signed_checkpoint.SerializeAsString();
}

absl::StatusOr<v1::Checkpoint> CheckpointKey::Open(
    absl::string_view signed_bytes) const {
  v1::SignedCheckpoint signed_checkpoint;
  if (!signed_checkpoint.ParseFromArray(signed_bytes.data(),
                                        static_cast<int>(signed_bytes.size()))) {
    return absl::InvalidArgumentError("is not a checkpoint (it does not parse)");
  }
  if (signed_checkpoint.version() != kFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "is a checkpoint of format version ", signed_checkpoint.version(),
        "; this server reads version ", kFormatVersion));
  }
  const std::string expected = Mac(signed_checkpoint.checkpoint());
  const std::string& given = signed_checkpoint.hmac_sha256();
  if (given.size() != expected.size() ||
      CRYPTO_memcmp(given.data(), expected.data(), expected.size()) != 0) {
    return absl::InvalidArgumentError(
        "fails its signature check: it was altered, or made by a server "
        "with another --checkpoint_key_file");
  }
  v1::Checkpoint checkpoint;
  if (!checkpoint.ParseFromString(signed_checkpoint.checkpoint())) {
    return absl::InvalidArgumentError("is signed but does not parse");
  }
  return checkpoint;
}

// ---- Values ----

absl::Status EncodeStateValue(const c10::IValue& value, v1::StateValue& out) {
  if (value.isNone()) {
    out.set_none(true);
  } else if (value.isTensor()) {
    const at::Tensor& tensor = value.toTensor();
    v1::StateTensor* state_tensor = out.mutable_tensor();
    state_tensor->set_on_device(!tensor.device().is_cpu());
    RETURN_IF_ERROR(EncodeTensor(tensor, *state_tensor->mutable_tensor()));
  } else if (value.isInt()) {
    out.set_int64_value(value.toInt());
  } else if (value.isDouble()) {
    out.set_double_value(value.toDouble());
  } else if (value.isBool()) {
    out.set_bool_value(value.toBool());
  } else if (value.isString()) {
    out.set_string_value(value.toStringRef());
  } else if (value.isList()) {
    v1::StateList* list = out.mutable_list();
    for (const c10::IValue& item : value.toListRef()) {
      RETURN_IF_ERROR(EncodeStateValue(item, *list->add_values()));
    }
  } else if (value.isGenericDict()) {
    v1::StateDict* dict = out.mutable_dict();
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString()) {
        return absl::FailedPreconditionError(
            "a dict with keys other than strings has no checkpoint form");
      }
      RETURN_IF_ERROR(EncodeStateValue(
          entry.value(), (*dict->mutable_entries())[entry.key().toStringRef()]));
    }
  } else if (value.isGenerator()) {
    const at::Generator& generator = value.toGenerator();
    if (!generator.device().is_cpu()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a ", generator.device().str(),
          " generator has no checkpoint form; draw on the CPU, as diffusers' "
          "randn_tensor does"));
    }
    const at::Tensor state = generator.get_state();
    out.set_cpu_generator(std::string(
        static_cast<const char*>(state.data_ptr()), state.nbytes()));
  } else if (const RunState* run_state = AsRunState(value)) {
    v1::ComponentState* component = out.mutable_component_state();
    const RunStateOwner owner = run_state->owner();
    component->set_role(owner.role);
    component->set_choice(owner.choice);
    ASSIGN_OR_RETURN(const c10::IValue saved, run_state->Save());
    RETURN_IF_ERROR(EncodeStateValue(saved, *component->mutable_saved()));
  } else {
    return absl::FailedPreconditionError(absl::StrCat(
        "a value of type ", value.tagKind(),
        " has no checkpoint form (blocks/core/run_state.h says how to give "
        "per-run state one)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<c10::IValue> DecodeStateValue(const v1::StateValue& value,
                                             const Components& components,
                                             const DecodeLimits& limits,
                                             c10::Device device) {
  switch (value.kind_case()) {
    case v1::StateValue::kNone:
      return c10::IValue();
    case v1::StateValue::kTensor: {
      ASSIGN_OR_RETURN(at::Tensor tensor,
                       DecodeTensor(value.tensor().tensor(), limits));
      if (value.tensor().on_device() && !device.is_cpu()) {
        tensor = tensor.to(device);
      }
      return tensor;
    }
    case v1::StateValue::kInt64Value:
      return value.int64_value();
    case v1::StateValue::kDoubleValue:
      return value.double_value();
    case v1::StateValue::kBoolValue:
      return value.bool_value();
    case v1::StateValue::kStringValue:
      return value.string_value();
    case v1::StateValue::kList: {
      c10::impl::GenericList list(c10::AnyType::get());
      for (const v1::StateValue& item : value.list().values()) {
        ASSIGN_OR_RETURN(c10::IValue decoded,
                         DecodeStateValue(item, components, limits, device));
        list.push_back(std::move(decoded));
      }
      return list;
    }
    case v1::StateValue::kDict: {
      c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
      for (const auto& [key, item] : value.dict().entries()) {
        ASSIGN_OR_RETURN(c10::IValue decoded,
                         DecodeStateValue(item, components, limits, device));
        dict.insert(key, std::move(decoded));
      }
      return dict;
    }
    case v1::StateValue::kCpuGenerator: {
      const std::string& bytes = value.cpu_generator();
      at::Generator generator = at::detail::createCPUGenerator();
      try {
        at::Tensor state = at::empty({static_cast<int64_t>(bytes.size())},
                                     at::kByte);
        std::copy(bytes.begin(), bytes.end(),
                  static_cast<char*>(state.data_ptr()));
        generator.set_state(state);
      } catch (const c10::Error&) {
        return absl::InvalidArgumentError(absl::StrCat(
            "a generator state of ", bytes.size(), " bytes does not load"));
      }
      return generator;
    }
    case v1::StateValue::kComponentState: {
      const v1::ComponentState& state = value.component_state();
      absl::StatusOr<const RunStateRestorer*> restorer =
          components.Get<RunStateRestorer>(state.role(), state.choice());
      if (!restorer.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "no component bound as '", state.role(), "' ('", state.choice(),
            "') restores its run state: ", restorer.status().message()));
      }
      ASSIGN_OR_RETURN(
          c10::IValue saved,
          DecodeStateValue(state.saved(), components, limits, device));
      ASSIGN_OR_RETURN(c10::intrusive_ptr<RunState> restored,
                       (*restorer)->RestoreRunState(
                           saved, {.role = state.role(), .choice = state.choice()}));
      return RunStateValue(std::move(restored));
    }
    default:
      return absl::InvalidArgumentError("a value of no kind");
  }
}

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
    return std::any_of(carried.begin(), carried.end(),
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
    return absl::Status(plan.status().code(),
                        absl::StrCat("pipeline '", pipeline.name,
                                     "': resume_from: ", plan.status().message()));
  }
  if (checkpoint.iteration() < 0) return failed("the checkpoint's iteration is negative");
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
  auto decode = [&](const std::string& name, const v1::StateValue& value,
                    const DecodeLimits& value_limits)
      -> absl::StatusOr<c10::IValue> {
    absl::StatusOr<c10::IValue> decoded =
        DecodeStateValue(value, pipeline.components, value_limits, device);
    if (!decoded.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pipeline '", pipeline.name, "': resume_from: value '", name,
          "': ", decoded.status().message()));
    }
    return decoded;
  };
  for (const auto& [name, value] : checkpoint.intermediates()) {
    ASSIGN_OR_RETURN(c10::IValue decoded,
                     decode(name, value, computed_limits));
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
