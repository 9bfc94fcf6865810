// libFuzzer target: a Run request as it arrives off the wire, through
// everything the server does with it before a block runs: parsing,
// ValidateRun against the pipeline it names (the seed loop when it names
// none served), the inputs the server fills, and decoding every input onto
// the CPU. Any crash, sanitizer report, or a request ValidateRun accepts
// that DecodeInputs then refuses for a reason other than its contents, is
// a finding.
//
//   build-sanitize/tests/fuzz/request_fuzz -max_total_time=60 \
//       NEW_CORPUS tests/fuzz/corpus/request
#include <google/protobuf/stubs/logging.h>

#include <cstdint>
#include <cstdlib>

#include "absl/strings/match.h"
#include "app/default_pipelines.h"
#include "engine/run_request.h"
#include "engine/tensor_codec.h"
#include "loopserve/v1/loopserve.pb.h"

namespace loopserve {
namespace {

const PipelineCatalog& Catalog() {
  static const PipelineCatalog* catalog = [] {
    absl::StatusOr<PipelineCatalog> loaded = LoadDefaultPipelines(c10::kCPU);
    if (!loaded.ok()) std::abort();
    return new PipelineCatalog(*std::move(loaded));
  }();
  return *catalog;
}

}  // namespace
}  // namespace loopserve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopserve;
  // Protobuf logs every string field that is not UTF-8; the fuzzer makes
  // many, and a refused parse is all that matters.
  static const bool quiet = [] {
    google::protobuf::SetLogHandler(nullptr);
    return true;
  }();
  (void)quiet;
  v1::RunRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  // Small limits, so that an input cannot ask for gigabytes legitimately.
  const RunLimits limits{
      .max_iterations = 4,
      .decode = {.max_tensor_bytes = 1 << 16, .max_tensor_elements = 1 << 14}};
  for (const auto& [name, value] : request.inputs()) {
    (void)DecodeValue(value, limits.decode);
  }
  const Pipeline* pipeline = Catalog().Find(request.pipeline());
  if (pipeline == nullptr) pipeline = Catalog().Find("seed-loop");
  absl::StatusOr<StreamSelection> selection =
      ValidateRun(*pipeline, request, limits);
  if (!selection.ok()) return 0;
  const auto resolved = ResolveInputs(*pipeline, request);
  absl::StatusOr<PipelineState> state =
      DecodeInputs(request, resolved, limits.decode, c10::kCPU);
  // What ValidateRun accepts decodes, unless its contents are refused
  // (NaN, a BOOL byte): nothing else may differ between the two.
  if (!state.ok() && !absl::StrContains(state.status().message(), "NaN") &&
      !absl::StrContains(state.status().message(), "BOOL element")) {
    std::abort();
  }
  return 0;
}
