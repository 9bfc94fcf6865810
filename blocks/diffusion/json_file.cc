#include "blocks/diffusion/json_file.h"

#include <google/protobuf/util/json_util.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "util/file.h"

namespace loopserve {
namespace {

// Bare infinities and NaN quoted, outside strings, so that the text parses
// and each value reads as the string it names.
std::string QuoteNonFiniteNumbers(absl::string_view text) {
  std::string out;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) {
        out += text[++i];
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') in_string = true;
    bool replaced = false;
    for (absl::string_view token : {"-Infinity", "Infinity", "NaN"}) {
      if (text.substr(i, token.size()) == token) {
        absl::StrAppend(&out, "\"", token, "\"");
        i += token.size() - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += c;
  }
  return out;
}

}  // namespace

absl::StatusOr<google::protobuf::Struct> ReadJsonObject(
    const std::string& path) {
  const std::optional<std::string> text = ReadWholeFile(path);
  if (!text) {
    return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  }
  google::protobuf::Struct json;
  if (auto status = google::protobuf::util::JsonStringToMessage(
          QuoteNonFiniteNumbers(*text), &json);
      !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "' is not a JSON object: ", status.message().as_string()));
  }
  return json;
}

}  // namespace loopserve
