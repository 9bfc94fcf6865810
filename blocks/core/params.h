// Declarations of what a block reads and writes: InputParam, OutputParam and
// the TypeHint they carry, plus ComponentSpec for the components it uses.
//
// They mirror diffusers' InputParam(name, type_hint, default, required,
// description) and OutputParam(name, type_hint, description). The type hint is
// a real type: GetBlockState checks values against it, and the service uses it
// to validate requests before they are queued.
//
//   std::vector<InputParam> inputs() const override {
//     return {{.name = "x",
//              .type_hint = TypeHint::Int() | TypeHint::Double() |
//                           TypeHint::Tensor(),
//              .required = true,
//              .description = "The value to increment"}};
//   }
//
// All types here are plain values, safe to copy and to share read-only
// between threads.
#pragma once

#include <ATen/core/ivalue.h>

#include <cstdint>
#include <string>
#include <typeinfo>
#include <vector>

#include "absl/strings/string_view.h"

namespace loopserve {

// The kinds of value a state may hold: the subset of c10::IValue that
// pipelines exchange and that the wire format can carry.
enum class ValueKind : uint8_t {
  kNone = 0,
  kTensor = 1 << 0,
  kInt = 1 << 1,
  kDouble = 1 << 2,
  kBool = 1 << 3,
  kString = 1 << 4,
  kList = 1 << 5,
  // Any IValue outside the subset above (objects, tuples, dicts ...).
  kOther = 1 << 6,
};

// The kind of `value`. Int, double, bool, tensor and generic lists all map to
// kList.
ValueKind KindOf(const c10::IValue& value);

// "none", "tensor", "int", "double", "bool", "string", "list" or "other".
absl::string_view KindName(ValueKind kind);

// A set of value kinds a parameter accepts. Combine with `|`:
// TypeHint::Int() | TypeHint::Tensor(). TypeHint::Any() accepts every kind.
class TypeHint {
 public:
  static constexpr TypeHint Tensor() { return TypeHint(ValueKind::kTensor); }
  static constexpr TypeHint Int() { return TypeHint(ValueKind::kInt); }
  static constexpr TypeHint Double() { return TypeHint(ValueKind::kDouble); }
  static constexpr TypeHint Bool() { return TypeHint(ValueKind::kBool); }
  static constexpr TypeHint String() { return TypeHint(ValueKind::kString); }
  static constexpr TypeHint List() { return TypeHint(ValueKind::kList); }
  static constexpr TypeHint Any() { return TypeHint(kAnyMask); }

  // The default hint is Any: diffusers' params without a type_hint accept
  // anything.
  constexpr TypeHint() : mask_(kAnyMask) {}

  constexpr TypeHint operator|(TypeHint other) const {
    return TypeHint(static_cast<uint8_t>(mask_ | other.mask_));
  }
  constexpr bool operator==(const TypeHint&) const = default;

  constexpr bool is_any() const { return mask_ == kAnyMask; }
  constexpr bool Contains(ValueKind kind) const {
    return (mask_ & static_cast<uint8_t>(kind)) != 0;
  }

  // Whether `value` fits the hint. None never does: absence is decided by
  // `required`, not by the type. An int fits a double hint, as in Python's
  // numeric tower (a client sending guidance_scale = 7 means 7.0).
  bool Accepts(const c10::IValue& value) const {
    return AcceptsKind(KindOf(value));
  }
  // The same, for a value known only by its kind (the service checks
  // requests before decoding them).
  bool AcceptsKind(ValueKind kind) const;

  // "int", "int | double | tensor", "any": the names the service reports.
  std::string ToString() const;

 private:
  static constexpr uint8_t kAnyMask = 0x7f;
  constexpr explicit TypeHint(ValueKind kind)
      : mask_(static_cast<uint8_t>(kind)) {}
  constexpr explicit TypeHint(uint8_t mask) : mask_(mask) {}

  uint8_t mask_;
};

// A value a block reads: from the user's inputs (Block::inputs) or from the
// intermediates earlier blocks produced (Block::intermediate_inputs).
struct InputParam {
  std::string name{};
  TypeHint type_hint{};
  // Used when the state has no value; None means "no default".
  c10::IValue default_value{};
  // A required param without a value is an INVALID_ARGUMENT naming it.
  bool required = false;
  std::string description{};
  // The number of iterations a loop will run (num_steps): the service caps
  // it at its --max_iterations before a run is queued.
  bool iteration_count = false;
  // A string input that must be one of these: a request naming another is
  // refused, and DescribePipeline lists them.
  std::vector<std::string> choices{};
  // The choices are the components bound to this role (a pipeline binding
  // several schedulers to "scheduler"): filled in, the first as the
  // default, when the pipeline is assembled.
  std::string choices_of_role{};
  // An int the engine draws at random when a request leaves it out (a
  // seed), and reports in RunStarted.resolved_inputs so that sending it
  // back reproduces the run.
  bool random_when_absent = false;
  // Inputs that decide what this one would (the latents' shape decides the
  // height): a request giving this input with any of them is refused
  // rather than one of the two silently ignored.
  std::vector<std::string> excluded_by{};
  // A number input's documented range, both ends included: a request
  // outside it is refused naming the range (ValidateRun).
  std::optional<double> minimum{};
  std::optional<double> maximum{};
};

// A value a block writes into the pipeline state's intermediates.
struct OutputParam {
  std::string name{};
  TypeHint type_hint{};
  std::string description{};
  // Working state that later blocks read but a client has no use for (a
  // run's schedule, its random generator): never a pipeline output, never
  // streamed.
  bool internal = false;
};

// The interface a block gets a component as (Components::Get<T>), as a
// value: ComponentInterface::Of<Scheduler>(). Default: any.
class ComponentInterface {
 public:
  template <typename T>
  static ComponentInterface Of() {
    return ComponentInterface(&typeid(T));
  }
  static ComponentInterface Of(const std::type_info& type) {
    return ComponentInterface(&type);
  }
  ComponentInterface() = default;

  bool is_any() const { return type_ == nullptr; }
  // Null for any.
  const std::type_info* type() const { return type_; }
  // "Scheduler" (the C++ type, without the loopserve namespace); "any".
  std::string Name() const;

 private:
  explicit ComponentInterface(const std::type_info* type) : type_(type) {}
  const std::type_info* type_ = nullptr;
};

// A component a block expects to find in Components under a role, e.g.
// {.name = "scheduler",
//  .type = "ddim_scheduler | euler_scheduler",
//  .interface = ComponentInterface::Of<Scheduler>()}.
struct ComponentSpec {
  // The role the block Gets it by ("denoiser"): a pipeline binds a
  // component to it.
  std::string role{};
  // The component types that fit, for people (DescribePipeline).
  std::string type{};
  std::string description{};
  // The interface the block Gets it as; checked when a pipeline is
  // assembled (CheckComponents).
  ComponentInterface interface {};
};

}  // namespace loopserve
