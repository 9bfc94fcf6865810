// The checkpoint form of the values in a run's state (v1::StateValue): every
// kind a block state holds (Note [checkpoint format] in engine/checkpoint.h)
// — tensors with whether they were on the run's device, scalars, strings,
// lists, dicts, CPU generators, and components' RunStates, which the
// component bound where they came from restores.
//
//   RETURN_IF_ERROR(EncodeStateValue(value,
//   (*checkpoint.mutable_carried())[name])); ASSIGN_OR_RETURN(c10::IValue
//   restored,
//                    DecodeStateValue(saved, components, limits, device));
//
// Thread-safety: pure functions.
#pragma once

#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "blocks/core/components.h"
#include "engine/tensor_codec.h"
#include "loopserve/v1/checkpoint.pb.h"

namespace loopserve {

// One value of a run's state to its checkpoint form, and back (tensors onto
// `device` when they were on the run's device). For tests and tools.
absl::Status EncodeStateValue(const c10::IValue& value, v1::StateValue& out);
absl::StatusOr<c10::IValue> DecodeStateValue(const v1::StateValue& value,
                                             const Components& components,
                                             const DecodeLimits& limits,
                                             c10::Device device);

}  // namespace loopserve
