#include "engine/digest.h"

#include <openssl/evp.h>

#include "absl/strings/escaping.h"

namespace loopserve {

std::string Sha256(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(digest), size);
}

std::string HexString(absl::string_view bytes) {
  return absl::BytesToHexString(bytes);
}

}  // namespace loopserve
