#include "server/auth.h"

#include <glog/logging.h>
#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/auth_context.h>
#include <sys/stat.h>

#include <map>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "util/file.h"

namespace loopserve {
namespace {

// Compares in time that depends only on the lengths, not on where the
// bytes first differ: a token cannot be guessed a byte at a time.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

struct FileStamp {
  int64_t mtime_ns = -1;
  int64_t size = -1;
};

FileStamp StampOf(const std::string& path) {
  struct stat info;
  if (stat(path.c_str(), &info) != 0) return {};
  return {.mtime_ns = int64_t{info.st_mtim.tv_sec} * 1'000'000'000 +
                      info.st_mtim.tv_nsec,
          .size = info.st_size};
}

std::string PropertyOf(const grpc::AuthContext& auth, const char* name) {
  const std::vector<grpc::string_ref> values = auth.FindPropertyValues(name);
  if (values.empty()) return "";
  return std::string(values.front().data(), values.front().size());
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseTokens(
    absl::string_view text) {
  std::vector<std::pair<std::string, std::string>> tokens;
  absl::flat_hash_set<std::string> seen;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", number, ": expected `PRINCIPAL TOKEN`, got ",
                       fields.size(), " fields"));
    }
    if (!seen.insert(std::string(fields[1])).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "line ", number, ": the token of '", fields[0], "' is given twice"));
    }
    tokens.emplace_back(fields[0], fields[1]);
  }
  return tokens;
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(
    Options options, Metrics* metrics) {
  std::unique_ptr<Authenticator> auth(
      new Authenticator(std::move(options), metrics));
  if (!auth->options_.tokens_file.empty()) {
    if (absl::Status status = auth->Load(); !status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--auth_tokens_file ",
                                                     auth->options_.tokens_file,
                                                     ": ", status.message()));
    }
  }
  return auth;
}

absl::Status Authenticator::Load() {
  const FileStamp stamp = StampOf(options_.tokens_file);
  const std::optional<std::string> text = ReadWholeFile(options_.tokens_file);
  if (!text) return absl::NotFoundError("cannot read the file");
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> tokens =
      ParseTokens(*text);
  absl::MutexLock lock(&mu_);
  // Whatever happens, this version of the file is not read again.
  loaded_mtime_ns_ = stamp.mtime_ns;
  loaded_size_ = stamp.size;
  if (!tokens.ok()) return tokens.status();
  tokens_ = *std::move(tokens);
  return absl::OkStatus();
}

void Authenticator::MaybeReload() {
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (now - checked_ < absl::Seconds(1)) return;
    checked_ = now;
    const FileStamp stamp = StampOf(options_.tokens_file);
    if (stamp.mtime_ns == loaded_mtime_ns_ && stamp.size == loaded_size_) {
      return;
    }
  }
  if (absl::Status status = Load(); !status.ok()) {
    LOG(ERROR) << "--auth_tokens_file " << options_.tokens_file
               << " changed and is refused, the tokens read before stay in "
                  "force: "
               << status.message();
  } else {
    LOG(INFO) << "--auth_tokens_file " << options_.tokens_file << " re-read";
  }
}

std::string Authenticator::PrincipalOf(absl::string_view token) {
  MaybeReload();
  absl::MutexLock lock(&mu_);
  std::string principal;
  // Every entry is compared, found or not.
  for (const auto& [name, known] : tokens_) {
    if (ConstantTimeEquals(token, known) && principal.empty()) {
      principal = name;
    }
  }
  return principal;
}

absl::Status Authenticator::Refuse(absl::string_view reason,
                                   absl::string_view message) {
  if (metrics_ != nullptr) metrics_->AuthFailed(reason);
  return absl::UnauthenticatedError(message);
}

namespace {

// What a gRPC call presents: its connection's security (`auth` may be null
// on a plaintext port) and its metadata.
Authenticator::CallCredentials GrpcCredentials(
    const grpc::AuthContext* auth,
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  const std::string transport =
      auth == nullptr
          ? ""
          : PropertyOf(*auth, GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME);
  Authenticator::CallCredentials call{
      .over_tls = transport == GRPC_SSL_TRANSPORT_SECURITY_TYPE ||
                  transport == GRPC_TLS_TRANSPORT_SECURITY_TYPE};
  if (const auto header = metadata.find("authorization");
      header != metadata.end()) {
    call.authorization =
        std::string(header->second.data(), header->second.size());
  }
  // Under mTLS gRPC verified the certificate: its subject is the caller.
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    call.verified_common_name = PropertyOf(*auth, GRPC_X509_CN_PROPERTY_NAME);
  }
  return call;
}

}  // namespace

absl::StatusOr<std::string> Authenticator::Authenticate(
    const grpc::ServerContextBase& context) {
  return Authenticate(
      GrpcCredentials(context.auth_context().get(), context.client_metadata()));
}

grpc::Status AuthProcessor::Process(const InputMetadata& auth_metadata,
                                    grpc::AuthContext* context,
                                    OutputMetadata* /*consumed*/,
                                    OutputMetadata* /*response*/) {
  const auto path = auth_metadata.find(":path");
  if (path != auth_metadata.end()) {
    const absl::string_view method(path->second.data(), path->second.size());
    if (absl::StartsWith(method, "/grpc.health.v1.Health/") ||
        absl::StartsWith(method, "/grpc.reflection.")) {
      return grpc::Status::OK;
    }
  }
  const absl::StatusOr<std::string> principal =
      auth_.Authenticate(GrpcCredentials(context, auth_metadata));
  if (principal.ok()) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      std::string(principal.status().message()));
}

absl::StatusOr<std::string> Authenticator::Authenticate(
    const CallCredentials& call) {
  if (options_.require_tls && !call.over_tls) {
    return Refuse("plaintext",
                  "this port serves health checks only; the loopserve API "
                  "takes TLS calls on the server's --port");
  }
  if (!options_.tokens_file.empty()) {
    if (!call.authorization.has_value()) {
      return Refuse("missing_token",
                    "the server requires a token: send the metadata "
                    "`authorization: Bearer TOKEN`");
    }
    const absl::string_view value = *call.authorization;
    constexpr absl::string_view kBearer = "Bearer ";
    const std::string principal =
        absl::StartsWith(value, kBearer)
            ? PrincipalOf(value.substr(kBearer.size()))
            : std::string();
    if (principal.empty()) {
      return Refuse("unknown_token",
                    "the authorization token is not one the server knows");
    }
    return principal;
  }
  return call.verified_common_name;
}

}  // namespace loopserve
