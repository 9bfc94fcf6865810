// libFuzzer target: loopctl's .npy reader. What it accepts must write back
// (SerializeNpy) and read again to the same tensor.
//
//   build-sanitize/tests/fuzz/npy_fuzz -max_total_time=60 \
//       NEW_CORPUS tests/fuzz/corpus/npy
#include <cstdint>
#include <cstdlib>

#include "client/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopserve;
  absl::StatusOr<v1::Tensor> tensor =
      ParseNpy(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!tensor.ok()) return 0;
  absl::StatusOr<std::string> written = SerializeNpy(*tensor);
  if (!written.ok()) return 0;  // BF16 has no NumPy type
  absl::StatusOr<v1::Tensor> again = ParseNpy(*written);
  if (!again.ok() ||
      again->SerializeAsString() != tensor->SerializeAsString()) {
    std::abort();
  }
  return 0;
}
