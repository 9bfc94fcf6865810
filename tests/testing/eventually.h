// Waiting in tests for something another thread or process brings about.
#pragma once

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace loopserve::testing {

// Polls `condition` until it holds (true) or `limit` passes (false).
template <typename Condition>
bool Eventually(Condition condition, absl::Duration limit = absl::Seconds(30),
                absl::Duration poll = absl::Milliseconds(1)) {
  const absl::Time end = absl::Now() + limit;
  while (!condition()) {
    if (absl::Now() > end) return false;
    absl::SleepFor(poll);
  }
  return true;
}

}  // namespace loopserve::testing
