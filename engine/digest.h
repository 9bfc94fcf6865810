// Digests (OpenSSL's libcrypto): pipelines' fingerprints and checkpoints.
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/message_lite.h"

namespace loopserve {

// SHA-256 of `data`: 32 bytes.
std::string Sha256(absl::string_view data);
// SHA-256 of the file at `path`, read in chunks (a model may be gigabytes);
// nullopt when it cannot be read.
std::optional<std::string> Sha256File(const std::string& path);
// `message` serialized deterministically (map entries in key order): the
// same message always gives the same bytes, to hash or compare.
std::string DeterministicBytes(const google::protobuf::MessageLite& message);

}  // namespace loopserve
