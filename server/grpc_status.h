// absl::Status -> grpc::Status, at the network edge only. The codes are the
// same numbers.
#pragma once

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace loopserve {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

// What the client of a cancelled call sees: DEADLINE_EXCEEDED when its
// deadline passed, else CANCELLED. `when`: "before the run finished" ...
//
// Note [whose deadline]
// ~~~~~~~~~~~~~~~~~~~~~
// A client whose deadline passes cancels the stream at once; the server's
// copy of that deadline (grpc-timeout counted from when the request
// arrived) passes a request's transit later. So a cancel that arrives
// within kDeadlineSlack of our deadline is the client's deadline, and is
// counted as what the client saw: DEADLINE_EXCEEDED.
inline absl::Status CancelStatus(const grpc::ServerContextBase& context,
                                 absl::string_view when) {
  constexpr auto kDeadlineSlack = std::chrono::milliseconds(250);
  if (context.deadline() <= std::chrono::system_clock::now() + kDeadlineSlack) {
    return absl::DeadlineExceededError(
        absl::StrCat("the deadline passed ", when));
  }
  return absl::CancelledError(
      absl::StrCat("the client cancelled the run ", when));
}

}  // namespace loopserve
