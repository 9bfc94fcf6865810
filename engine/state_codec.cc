#include "engine/state_codec.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "blocks/core/run_state.h"
#include "util/status_macros.h"

namespace loopserve {

absl::Status EncodeStateValue(const c10::IValue& value, v1::StateValue& out) {
  if (EncodeScalar(value, out)) return absl::OkStatus();
  if (value.isNone()) {
    out.set_none(true);
  } else if (value.isTensor()) {
    const at::Tensor& tensor = value.toTensor();
    v1::StateTensor* state_tensor = out.mutable_tensor();
    state_tensor->set_on_device(!tensor.device().is_cpu());
    RETURN_IF_ERROR(EncodeTensor(tensor, *state_tensor->mutable_tensor()));
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
          entry.value(),
          (*dict->mutable_entries())[entry.key().toStringRef()]));
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
        at::Tensor state =
            at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
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
      ASSIGN_OR_RETURN(
          c10::intrusive_ptr<RunState> restored,
          (*restorer)->RestoreRunState(
              saved, {.role = state.role(), .choice = state.choice()}));
      return RunStateValue(std::move(restored));
    }
    default:
      return absl::InvalidArgumentError("a value of no kind");
  }
}

}  // namespace loopserve
