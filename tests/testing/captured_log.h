// CapturedLog: the run lines glog writes while it lives, for tests of
// what the server logs.
#pragma once

#include <glog/logging.h>

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace loopserve::testing {

// The lines glog writes while it lives.
class CapturedLog : public google::LogSink {
 public:
  struct Line {
    google::LogSeverity severity;
    std::string text;
  };
  CapturedLog() { google::AddLogSink(this); }
  ~CapturedLog() override { google::RemoveLogSink(this); }

  void send(google::LogSeverity severity, const char*, const char*, int,
            const google::LogMessageTime&, const char* message,
            size_t length) override {
    absl::MutexLock lock(&mu_);
    lines_.push_back({severity, std::string(message, length)});
  }

  // The run lines that contain `text`.
  std::vector<Line> RunLines(absl::string_view text) {
    absl::MutexLock lock(&mu_);
    std::vector<Line> found;
    for (const Line& line : lines_) {
      if (absl::StartsWith(line.text, "run ") &&
          absl::StrContains(line.text, text)) {
        found.push_back(line);
      }
    }
    return found;
  }

 private:
  absl::Mutex mu_;
  std::vector<Line> lines_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loopserve::testing
