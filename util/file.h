// ReadWholeFile: a file's bytes, read at once (configurations, keys, token
// files, certificates, JSON, checkpoints: small files read whole).
//
//   std::optional<std::string> text = ReadWholeFile(path);
//   if (!text) return absl::NotFoundError(absl::StrCat("cannot read '", path,
//   "'"));
//
// Each caller words its own error (which flag, which status code): the file
// is the caller's input, not this function's.
#pragma once

#include <optional>
#include <string>

namespace loopserve {

// The file's bytes, or nullopt when it cannot be opened or read (a missing
// file, no permission, a directory).
std::optional<std::string> ReadWholeFile(const std::string& path);

}  // namespace loopserve
