// Reading the JSON files of a diffusers folder (scheduler_config.json,
// tokenizer.json, tokenizer_config.json) as protobuf's Struct.
#pragma once

#include <google/protobuf/struct.pb.h>

#include <string>

#include "absl/status/statusor.h"

namespace loopserve {

// The JSON object in the file at `path`. Python's json writes infinities
// and NaN bare (a DPM-Solver config's "lambda_min_clipped": -Infinity),
// which JSON does not allow: they read as the strings they name. NOT_FOUND
// "cannot read 'PATH'"; INVALID_ARGUMENT "'PATH' is not a JSON object: ...".
absl::StatusOr<google::protobuf::Struct> ReadJsonObject(
    const std::string& path);

}  // namespace loopserve
