// CertificateFiles: a server's certificate chain and key as PEM files,
// served as they are now: re-read when either file changes (looked at, at
// most once a second, when a TLS handshake asks), so a renewed certificate
// (a cert-manager Secret updated in place) is served without a restart. The
// HTTP front's TLS uses it; gRPC's FileWatcherCertificateProvider does the
// same for the gRPC port.
//
//   ASSIGN_OR_RETURN(auto files, CertificateFiles::Load(cert, key));
//   files->Install(ctx);   // ctx's handshakes present the files' pair
//
// A change that does not load (a half-written file, a key that does not
// match) is logged, and the pair in force stays.
//
// Thread-safety: handshakes on any number of threads; the object outlives
// every SSL_CTX it was installed in.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

struct ssl_ctx_st;
struct ssl_st;

namespace loopserve {

class CertificateFiles {
 public:
  // Reads both files now; the error names the file and what is wrong.
  static absl::StatusOr<std::unique_ptr<CertificateFiles>> Load(
      std::string cert_file, std::string key_file);

  // Every handshake of `ctx` presents the current pair.
  void Install(ssl_ctx_st* ctx);

  ~CertificateFiles();

 private:
  struct Pair;
  // When the files were read, as their modification times and sizes.
  struct Stamp {
    int64_t cert_mtime_ns = -1, cert_size = -1;
    int64_t key_mtime_ns = -1, key_size = -1;
    bool operator==(const Stamp&) const = default;
  };

  CertificateFiles(std::string cert_file, std::string key_file)
      : cert_file_(std::move(cert_file)), key_file_(std::move(key_file)) {}

  Stamp StampNow() const;
  absl::StatusOr<std::shared_ptr<const Pair>> Read() const;
  // The pair to present, re-read first if the files changed.
  std::shared_ptr<const Pair> Current() ABSL_LOCKS_EXCLUDED(mu_);
  // SSL_CTX_set_cert_cb's callback: 1 when `ssl` has its certificate.
  static int OnHandshake(ssl_st* ssl, void* self);

  const std::string cert_file_;
  const std::string key_file_;
  absl::Mutex mu_;
  std::shared_ptr<const Pair> pair_ ABSL_GUARDED_BY(mu_);
  Stamp stamp_ ABSL_GUARDED_BY(mu_);
  absl::Time checked_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace loopserve
