#include "util/file.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

namespace loopserve {

std::optional<std::string> ReadWholeFile(const std::string& path) {
  // A directory opens as a stream on Linux and reads as empty.
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return std::move(bytes).str();
}

}  // namespace loopserve
