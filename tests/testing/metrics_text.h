// Reading Prometheus' text exposition format in tests.
//
//   EXPECT_EQ(MetricValue(text,
//   R"(loopserve_runs_total{code="OK",pipeline="seed-loop"})"), 3);
//
// `series` is the metric name with its labels exactly as the server writes
// them (prometheus-cpp sorts labels by name). -1 when the series is absent.
#pragma once

#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"

namespace loopserve::testing {

inline double MetricValue(const std::string& text, absl::string_view series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (absl::StartsWith(line, series) && line.size() > series.size() &&
        line[series.size()] == ' ') {
      double value = 0;
      if (absl::SimpleAtod(absl::string_view(line).substr(series.size() + 1),
                           &value)) {
        return value;
      }
    }
  }
  return -1;
}

}  // namespace loopserve::testing
