#include "blocks/core/param_reader.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loopserve {
namespace {

absl::Status KindError(absl::string_view name, absl::string_view wanted,
                       const c10::IValue& value) {
  return ParamError(name, absl::StrCat("expected ", wanted, ", got ",
                                       KindName(KindOf(value))));
}

// The value as a double, when it is a number.
bool AsDouble(const c10::IValue& value, double& out) {
  if (value.isDouble()) {
    out = value.toDouble();
    return true;
  }
  if (value.isInt()) {
    out = static_cast<double>(value.toInt());
    return true;
  }
  return false;
}

}  // namespace

absl::Status ParamError(absl::string_view name, absl::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("param '", name, "': ", message));
}

const c10::IValue* ParamReader::Find(absl::string_view name) {
  asked_.insert(std::string(name));
  auto it = params_.find(name);
  return it == params_.end() ? nullptr : &it->second;
}

absl::StatusOr<double> ParamReader::Double(absl::string_view name,
                                           double fallback) {
  const c10::IValue* value = Find(name);
  if (value == nullptr) return fallback;
  double out = 0;
  if (!AsDouble(*value, out)) return KindError(name, "a number", *value);
  return out;
}

absl::StatusOr<int64_t> ParamReader::Int(absl::string_view name,
                                         int64_t fallback) {
  const c10::IValue* value = Find(name);
  if (value == nullptr) return fallback;
  if (value->isInt()) return value->toInt();
  if (value->isDouble()) {
    const double d = value->toDouble();
    if (std::trunc(d) == d && std::abs(d) < 9.0e15) {
      return static_cast<int64_t>(d);
    }
    return ParamError(name, absl::StrCat("expected an integer, got ", d));
  }
  return KindError(name, "an integer", *value);
}

absl::StatusOr<bool> ParamReader::Bool(absl::string_view name, bool fallback) {
  const c10::IValue* value = Find(name);
  if (value == nullptr) return fallback;
  if (!value->isBool()) return KindError(name, "a bool", *value);
  return value->toBool();
}

absl::StatusOr<std::string> ParamReader::String(absl::string_view name,
                                                absl::string_view fallback) {
  const c10::IValue* value = Find(name);
  if (value == nullptr) return std::string(fallback);
  if (!value->isString()) return KindError(name, "a string", *value);
  return value->toStringRef();
}

absl::StatusOr<std::string> ParamReader::Choice(
    absl::string_view name, absl::string_view fallback,
    std::initializer_list<absl::string_view> choices) {
  auto value = String(name, fallback);
  if (!value.ok()) return value.status();
  if (std::find(choices.begin(), choices.end(), *value) == choices.end()) {
    return ParamError(
        name, absl::StrCat("must be one of ", absl::StrJoin(choices, ", "),
                           "; got '", *value, "'"));
  }
  return value;
}

absl::StatusOr<std::vector<double>> ParamReader::DoubleList(
    absl::string_view name, std::vector<double> fallback) {
  const c10::IValue* value = Find(name);
  if (value == nullptr) return fallback;
  std::vector<double> out;
  if (value->isDoubleList()) {
    for (double d : value->toDoubleList()) out.push_back(d);
  } else if (value->isIntList()) {
    for (int64_t i : value->toIntList()) out.push_back(static_cast<double>(i));
  } else if (value->isList()) {
    for (const c10::IValue& element : value->toListRef()) {
      double d = 0;
      if (!AsDouble(element, d)) {
        return KindError(name, "a list of numbers", element);
      }
      out.push_back(d);
    }
  } else {
    return KindError(name, "a list of numbers", *value);
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> ParamReader::IntList(
    absl::string_view name, std::vector<int64_t> fallback) {
  if (!Has(name)) return fallback;
  absl::StatusOr<std::vector<double>> numbers = DoubleList(name, {});
  if (!numbers.ok()) return numbers.status();
  std::vector<int64_t> out;
  for (double d : *numbers) {
    if (d != std::trunc(d) || std::abs(d) > 9.0e15) {
      return ParamError(name,
                        absl::StrCat("expects a list of integers, got ", d));
    }
    out.push_back(static_cast<int64_t>(d));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ParamReader::StringList(
    absl::string_view name, std::vector<std::string> fallback) {
  const c10::IValue* value = Find(name);
  if (value == nullptr) return fallback;
  if (!value->isList()) return KindError(name, "a list of strings", *value);
  std::vector<std::string> out;
  for (const c10::IValue& element : value->toListRef()) {
    if (!element.isString()) {
      return KindError(name, "a list of strings", element);
    }
    out.push_back(element.toStringRef());
  }
  return out;
}

absl::Status ParamReader::CheckAllRead() const {
  std::vector<std::string> unknown;
  for (const auto& [name, value] : params_) {
    if (!asked_.contains(name)) unknown.push_back(name);
  }
  if (unknown.empty()) return absl::OkStatus();
  std::sort(unknown.begin(), unknown.end());
  std::vector<std::string> known(asked_.begin(), asked_.end());
  std::sort(known.begin(), known.end());
  return ParamError(unknown.front(), absl::StrCat("unknown param; known: ",
                                                  absl::StrJoin(known, ", ")));
}

}  // namespace loopserve
