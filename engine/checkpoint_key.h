// CheckpointKey: the key a server signs its checkpoints with and checks
// them against (Note [checkpoint format] in engine/checkpoint.h): HMAC-SHA256
// over the serialized Checkpoint, in a versioned SignedCheckpoint.
//
//   ASSIGN_OR_RETURN(CheckpointKey key, CheckpointKey::FromFile(path));
//   std::string bytes = key.Sign(checkpoint.SerializeAsString());
//   ASSIGN_OR_RETURN(v1::Checkpoint opened, key.Open(bytes));
//
// Thread-safety: immutable, safe from any thread.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "loopserve/v1/checkpoint.pb.h"

namespace loopserve {

// The key checkpoints are signed and checked with.
class CheckpointKey {
 public:
  // The least key length accepted, in bytes.
  static constexpr size_t kMinBytes = 16;

  // `key` as given; INVALID_ARGUMENT when shorter than kMinBytes.
  static absl::StatusOr<CheckpointKey> FromBytes(std::string key);
  // --checkpoint_key_file: the file's bytes without trailing whitespace
  // (`openssl rand -hex 32 > key` makes one). NOT_FOUND when it cannot be
  // read; INVALID_ARGUMENT, naming it, when too short.
  static absl::StatusOr<CheckpointKey> FromFile(const std::string& path);
  // 32 random bytes: checkpoints then resume only in this process.
  static CheckpointKey Random();

  // `checkpoint`, serialized and signed: what Iteration.checkpoint holds.
  std::string Sign(std::string serialized_checkpoint) const;
  // The Checkpoint `signed_bytes` holds, once its version and MAC check.
  // INVALID_ARGUMENT saying which check failed.
  absl::StatusOr<v1::Checkpoint> Open(absl::string_view signed_bytes) const;

 private:
  explicit CheckpointKey(absl::string_view key)
      : key_(key.begin(), key.end()) {}
  std::string Mac(absl::string_view body) const;

  std::vector<unsigned char> key_;
};

}  // namespace loopserve
