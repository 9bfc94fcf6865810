#include "engine/run_log.h"

#include <glog/logging.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "blocks/core/block.h"
#include "util/user_text.h"

namespace loopserve {
namespace {

// A logfmt value: bare when it is a plain word, else quoted and escaped;
// no control byte a client sent (in a request_id, a message quoting its
// input) reaches the log as it is.
std::string LogValue(absl::string_view value) {
  const auto plain = [](char c) {
    return c > ' ' && c != '"' && c != '=' && c != '\\' && c != '\x7f';
  };
  if (!value.empty() && std::all_of(value.begin(), value.end(), plain)) {
    return std::string(value);
  }
  std::string quoted = "\"";
  for (const char c : value) {
    switch (c) {
      case '\\':
      case '"':
        quoted += '\\';
        quoted += c;
        break;
      case '\n':
        quoted += "\\n";
        break;
      case '\t':
        quoted += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < ' ' || c == '\x7f') {
          absl::StrAppend(&quoted, "\\x", absl::Hex(c & 0xff, absl::kZeroPad2));
        } else {
          quoted += c;
        }
    }
  }
  quoted += '"';
  return quoted;
}

bool IsServerFault(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnimplemented:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string FormatOutcome(const RunOutcome& outcome) {
  const absl::Status& status = outcome.status;
  std::string line = absl::StrCat(
      outcome.refused ? "run refused" : "run ended",
      " run_id=", LogValue(outcome.run_id.empty() ? "-" : outcome.run_id),
      // Bounded: a refused request's id may be of any length.
      " request_id=", LogValue(outcome.request_id.substr(0, kMaxQuotedBytes)),
      " pipeline=", LogValue(outcome.pipeline->name),
      " code=", absl::StatusCodeToString(status.code()));
  if (const std::optional<std::string> block = AttributedBlockPath(status);
      block.has_value() && !block->empty()) {
    absl::StrAppend(&line, " block=", LogValue(*block));
  }
  if (outcome.queue_ms >= 0) {
    absl::StrAppend(&line, " queue_ms=", absl::SixDigits(outcome.queue_ms));
  }
  if (outcome.run_ms >= 0) {
    absl::StrAppend(&line, " run_ms=", absl::SixDigits(outcome.run_ms),
                    " iterations=", outcome.iterations);
    if (outcome.mean_batch_size > 0) {
      absl::StrAppend(
          &line, " mean_batch_size=", absl::SixDigits(outcome.mean_batch_size));
    }
  }
  if (!status.ok()) {
    absl::StrAppend(&line, " message=", LogValue(status.message()));
  }
  // Last, so that the fields above read the same with or without them.
  if (!outcome.principal.empty()) {
    absl::StrAppend(&line, " principal=", LogValue(outcome.principal));
  }
  if (!outcome.peer.empty()) {
    absl::StrAppend(&line, " peer=", LogValue(outcome.peer));
  }
  return line;
}

void ReportOutcome(Metrics& metrics, const RunOutcome& outcome) {
  metrics.RunFinished(*outcome.pipeline, outcome.status.code());
  if (outcome.refused) metrics.RunRefused(outcome.status.code());
  if (outcome.status.ok()) {
    VLOG(1) << FormatOutcome(outcome);
  } else if (IsServerFault(outcome.status.code())) {
    LOG(ERROR) << FormatOutcome(outcome);
  } else {
    LOG(WARNING) << FormatOutcome(outcome);
  }
}

absl::Status InitLogging(const char* program, absl::string_view level) {
  int severity;
  int verbosity = 0;
  if (level == "debug") {
    severity = google::GLOG_INFO;
    verbosity = 1;
  } else if (level == "info") {
    severity = google::GLOG_INFO;
  } else if (level == "warning") {
    severity = google::GLOG_WARNING;
  } else if (level == "error") {
    severity = google::GLOG_ERROR;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log_level: unknown level '", level,
                     "'; expected debug, info, warning or error"));
  }
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = severity;
  FLAGS_v = verbosity;
  // libtorch logs through glog too and may have set it up already.
  if (!google::IsGoogleLoggingInitialized()) {
    google::InitGoogleLogging(program);
  }
  return absl::OkStatus();
}

}  // namespace loopserve
