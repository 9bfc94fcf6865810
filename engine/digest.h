// SHA-256 (OpenSSL's libcrypto): pipelines' fingerprints and checkpoints.
//
// Thread-safety: pure functions.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace loopserve {

// SHA-256 of `data`: 32 bytes.
std::string Sha256(absl::string_view data);
// Lower-case hex of `bytes`.
std::string HexString(absl::string_view bytes);

}  // namespace loopserve
