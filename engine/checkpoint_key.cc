#include "engine/checkpoint_key.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "util/file.h"

namespace loopserve {
namespace {

constexpr uint32_t kFormatVersion = 1;
// What the MAC covers besides the body: the format, so that a MAC made for
// anything else under the same key never passes.
constexpr absl::string_view kMacContext("loopserve checkpoint v1\0", 24);

}  // namespace

// ---- CheckpointKey ----

absl::StatusOr<CheckpointKey> CheckpointKey::FromBytes(std::string key) {
  if (key.size() < kMinBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a checkpoint key must have at least ", kMinBytes,
                     " bytes, got ", key.size()));
  }
  return CheckpointKey(key);
}

absl::StatusOr<CheckpointKey> CheckpointKey::FromFile(const std::string& path) {
  std::optional<std::string> text = ReadWholeFile(path);
  if (!text) {
    return absl::NotFoundError(
        absl::StrCat("cannot read --checkpoint_key_file '", path, "'"));
  }
  std::string key = *std::move(text);
  key.erase(
      std::find_if(key.rbegin(), key.rend(),
                   [](unsigned char c) { return !absl::ascii_isspace(c); })
          .base(),
      key.end());
  absl::StatusOr<CheckpointKey> made = FromBytes(std::move(key));
  if (!made.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--checkpoint_key_file '", path, "': ", made.status().message(),
        " (make one with: openssl rand -hex 32 > FILE)"));
  }
  return made;
}

CheckpointKey CheckpointKey::Random() {
  std::string key(32, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(key.data()),
             static_cast<int>(key.size()));
  return CheckpointKey(key);
}

std::string CheckpointKey::Mac(absl::string_view body) const {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC_CTX* context = EVP_MAC_CTX_new(mac);
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end()};
  unsigned char out[EVP_MAX_MD_SIZE];
  size_t size = 0;
  EVP_MAC_init(context, key_.data(), key_.size(), params);
  EVP_MAC_update(context,
                 reinterpret_cast<const unsigned char*>(kMacContext.data()),
                 kMacContext.size());
  EVP_MAC_update(context, reinterpret_cast<const unsigned char*>(body.data()),
                 body.size());
  EVP_MAC_final(context, out, &size, sizeof(out));
  EVP_MAC_CTX_free(context);
  EVP_MAC_free(mac);
  return std::string(reinterpret_cast<const char*>(out), size);
}

std::string CheckpointKey::Sign(std::string serialized_checkpoint) const {
  v1::SignedCheckpoint signed_checkpoint;
  signed_checkpoint.set_version(kFormatVersion);
  signed_checkpoint.set_hmac_sha256(Mac(serialized_checkpoint));
  signed_checkpoint.set_checkpoint(std::move(serialized_checkpoint));
  return signed_checkpoint.SerializeAsString();
}

absl::StatusOr<v1::Checkpoint> CheckpointKey::Open(
    absl::string_view signed_bytes) const {
  v1::SignedCheckpoint signed_checkpoint;
  if (!signed_checkpoint.ParseFromArray(
          signed_bytes.data(), static_cast<int>(signed_bytes.size()))) {
    return absl::InvalidArgumentError(
        "is not a checkpoint (it does not parse)");
  }
  if (signed_checkpoint.version() != kFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "is a checkpoint of format version ", signed_checkpoint.version(),
        "; this server reads version ", kFormatVersion));
  }
  const std::string expected = Mac(signed_checkpoint.checkpoint());
  const std::string& given = signed_checkpoint.hmac_sha256();
  if (given.size() != expected.size() ||
      CRYPTO_memcmp(given.data(), expected.data(), expected.size()) != 0) {
    return absl::InvalidArgumentError(
        "fails its signature check: it was altered, or made by a server "
        "with another --checkpoint_key_file");
  }
  v1::Checkpoint checkpoint;
  if (!checkpoint.ParseFromString(signed_checkpoint.checkpoint())) {
    return absl::InvalidArgumentError("is signed but does not parse");
  }
  return checkpoint;
}

}  // namespace loopserve
