// The live preview page's files (server/web/), embedded in the binary at
// build time: the HTTP front serves them with no files beside it.
#pragma once

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace loopserve {

struct WebAsset {
  absl::string_view path;  // "/", "/app.js" ...
  absl::string_view content_type;
  absl::string_view body;
};

absl::Span<const WebAsset> WebAssets();

}  // namespace loopserve
