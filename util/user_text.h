// QuoteUserText: text a client sent, made safe to put in an error message
// or a log line: quoted, escaped (no control bytes, no invalid UTF-8 reach
// a terminal or a log parser) and cut to a bounded length, so that a 1 MB
// pipeline name costs its sender a short error, not a status the client
// must refuse as oversized metadata.
//
//   return absl::NotFoundError(
//       absl::StrCat("pipeline ", QuoteUserText(name), " is not served"));
//
// Thread-safety: a pure function.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace loopserve {

// How many bytes of a client's text an error message quotes.
inline constexpr size_t kMaxQuotedBytes = 128;

// 'text', C-escaped; longer than `max` bytes: its first `max` bytes, then
// "... (N bytes)".
inline std::string QuoteUserText(absl::string_view text,
                                 size_t max = kMaxQuotedBytes) {
  if (text.size() <= max) return absl::StrCat("'", absl::CHexEscape(text), "'");
  return absl::StrCat("'", absl::CHexEscape(text.substr(0, max)), "...' (",
                      text.size(), " bytes)");
}

}  // namespace loopserve
