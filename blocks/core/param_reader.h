// ParamReader: typed, checked access to the params a configuration gives a
// block or a component (BlockParams), with errors that name the param.
//
//   ParamReader params(raw);
//   ASSIGN_OR_RETURN(double beta_start, params.Double("beta_start", 0.0001));
//   ASSIGN_OR_RETURN(std::string schedule,
//                    params.Choice("beta_schedule", "linear",
//                              {"linear", "scaled_linear"}));
//   RETURN_IF_ERROR(params.CheckAllRead());  // refuses unknown params
//
// Every error is INVALID_ARGUMENT and starts "param 'NAME': ". The caller
// (the configuration loader) adds where the param came from.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/registry.h"

namespace loopserve {

class ParamReader {
 public:
  // `params` must outlive the reader.
  explicit ParamReader(const BlockParams& params) : params_(params) {}

  bool Has(absl::string_view name) const { return params_.contains(name); }

  // The param's value, or `fallback` when it is absent. An int reads as a
  // double; a double with an integral value reads as an int (JSON has one
  // number type).
  absl::StatusOr<double> Double(absl::string_view name, double fallback);
  absl::StatusOr<int64_t> Int(absl::string_view name, int64_t fallback);
  absl::StatusOr<bool> Bool(absl::string_view name, bool fallback);
  absl::StatusOr<std::string> String(absl::string_view name,
                                     absl::string_view fallback);
  // A string that must be one of `choices`.
  absl::StatusOr<std::string> Choice(
      absl::string_view name, absl::string_view fallback,
      std::initializer_list<absl::string_view> choices);
  // A list of numbers.
  absl::StatusOr<std::vector<double>> DoubleList(absl::string_view name,
                                                 std::vector<double> fallback);
  // A list of integers (integral numbers).
  absl::StatusOr<std::vector<int64_t>> IntList(absl::string_view name,
                                               std::vector<int64_t> fallback);
  // A list of strings.
  absl::StatusOr<std::vector<std::string>> StringList(
      absl::string_view name, std::vector<std::string> fallback);

  // INVALID_ARGUMENT naming the first param (sorted) that no accessor asked
  // for, and the ones they did: a misspelt key must not be silently ignored.
  absl::Status CheckAllRead() const;

 private:
  const c10::IValue* Find(absl::string_view name);

  const BlockParams& params_;
  absl::flat_hash_set<std::string> asked_;
};

// "param 'NAME': MESSAGE" as INVALID_ARGUMENT.
absl::Status ParamError(absl::string_view name, absl::string_view message);

}  // namespace loopserve
