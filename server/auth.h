// Authenticator: who a call to the LoopPipelineService is, or why it is
// refused. grpc.health.v1.Health and reflection never ask it: probes stay
// open.
//
//   ASSIGN_OR_RETURN(auto auth, Authenticator::Create(
//       {.tokens_file = "/etc/loopserve/tokens", .require_tls = true},
//       &metrics));
//   absl::StatusOr<std::string> principal = auth->Authenticate(*context);
//
// Three checks, each on when configured:
//   require_tls   a call that arrived over plaintext (the --health_port
//                 listener, which serves probes) is UNAUTHENTICATED.
//   tokens_file   the call's `authorization: Bearer TOKEN` must be one of
//                 the file's tokens; the principal is its name. The file is
//                 one `PRINCIPAL TOKEN` pair per line (# comments, blank
//                 lines); it is re-read when it changes (checked at most
//                 once a second), so tokens rotate without a restart. A
//                 file that no longer parses keeps the tokens in force and
//                 logs why.
//   otherwise, under mTLS, the principal is the client certificate's
//   common name.
// Every refusal is counted in loopserve_auth_failures_total{reason}.
//
// Thread-safety: Authenticate from any thread.
#pragma once

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/server_context.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/metrics.h"

namespace loopserve {

// A tokens file's contents: (principal, token) pairs; INVALID_ARGUMENT
// naming the line that is not `PRINCIPAL TOKEN`, or a token given twice.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseTokens(
    absl::string_view text);

class Authenticator {
 public:
  struct Options {
    // --auth_tokens_file; empty: no tokens are asked for.
    std::string tokens_file;
    // Calls must arrive over TLS (the server has a certificate).
    bool require_tls = false;
  };
  // Reads the tokens file; its error names the file and the line.
  // `metrics` (may be null) counts refusals.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(
      Options options, Metrics* metrics);

  // What a call presents, whatever its protocol.
  struct CallCredentials {
    bool over_tls = false;
    // The `authorization` header or metadata, when sent.
    std::optional<std::string> authorization{};
    // Under mTLS: the client certificate's common name, once verified.
    std::string verified_common_name{};
  };

  // The call's principal ("" when the server authenticates no one), or
  // UNAUTHENTICATED saying what is missing.
  absl::StatusOr<std::string> Authenticate(
      const grpc::ServerContextBase& context);
  // The same, for a call of another protocol (the HTTP front).
  absl::StatusOr<std::string> Authenticate(const CallCredentials& call);

 private:
  Authenticator(Options options, Metrics* metrics)
      : options_(std::move(options)), metrics_(metrics) {}
  absl::Status Refuse(absl::string_view reason, absl::string_view message);
  // Re-reads the tokens file if it changed since it was read.
  void MaybeReload() ABSL_LOCKS_EXCLUDED(mu_);
  // Reads the tokens file now.
  absl::Status Load() ABSL_LOCKS_EXCLUDED(mu_);
  // The principal of `token`; empty when it is no one's.
  std::string PrincipalOf(absl::string_view token) ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;
  Metrics* const metrics_;

  absl::Mutex mu_;
  std::vector<std::pair<std::string, std::string>> tokens_ ABSL_GUARDED_BY(mu_);
  // What the file looked like when read, and when that was last checked.
  int64_t loaded_mtime_ns_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t loaded_size_ ABSL_GUARDED_BY(mu_) = -1;
  absl::Time checked_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

// The Authenticator as gRPC's AuthMetadataProcessor, for the TLS port:
// gRPC calls it with a call's metadata before it reads the call's
// messages, so a call it refuses (UNAUTHENTICATED) never has its request
// received; without it, a token-less client's request (up to
// --max_request_bytes) was read whole before the service refused it.
// Health checks and reflection stay open, as in the services. gRPC lets
// only secure credentials carry a processor: on a plaintext port with
// tokens the services refuse, after the message.
class AuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit AuthProcessor(Authenticator& auth) : auth_(auth) {}

  // Quick (a lookup, a file's stat once a second): on gRPC's thread.
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata,
                       grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  Authenticator& auth_;
};

}  // namespace loopserve
