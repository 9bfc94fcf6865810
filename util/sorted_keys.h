// SortedKeys: a map's keys, sorted: how registries and Components list what
// they hold (in errors, and for DescribePipeline), independent of hash order.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

namespace loopserve {

template <typename Map>
std::vector<std::string> SortedKeys(const Map& map) {
  std::vector<std::string> keys;
  keys.reserve(map.size());
  for (const auto& entry : map) keys.push_back(entry.first);
  std::sort(keys.begin(), keys.end());
  return keys;
}

}  // namespace loopserve
