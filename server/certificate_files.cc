#include "server/certificate_files.h"

#include <glog/logging.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"

namespace loopserve {

// A certificate, the chain after it, and its key, owned.
struct CertificateFiles::Pair {
  X509* cert = nullptr;
  STACK_OF(X509) * chain = nullptr;
  EVP_PKEY* key = nullptr;
  ~Pair() {
    X509_free(cert);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
  }
};

namespace {

// OpenSSL's reason for the last failure, for people.
std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no PEM data";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CertificateFiles>> CertificateFiles::Load(
    std::string cert_file, std::string key_file) {
  std::unique_ptr<CertificateFiles> files(
      new CertificateFiles(std::move(cert_file), std::move(key_file)));
  const Stamp stamp = files->StampNow();
  absl::StatusOr<std::shared_ptr<const Pair>> pair = files->Read();
  if (!pair.ok()) return pair.status();
  absl::MutexLock lock(&files->mu_);
  files->pair_ = *std::move(pair);
  files->stamp_ = stamp;
  files->checked_ = absl::Now();
  return files;
}

CertificateFiles::~CertificateFiles() = default;

CertificateFiles::Stamp CertificateFiles::StampNow() const {
  const auto of = [](const std::string& path, int64_t& mtime, int64_t& size) {
    std::error_code error;
    const auto time = std::filesystem::last_write_time(path, error);
    mtime = error ? -1 : time.time_since_epoch().count();
    const auto bytes = std::filesystem::file_size(path, error);
    size = error ? -1 : static_cast<int64_t>(bytes);
  };
  Stamp stamp;
  of(cert_file_, stamp.cert_mtime_ns, stamp.cert_size);
  of(key_file_, stamp.key_mtime_ns, stamp.key_size);
  return stamp;
}

absl::StatusOr<std::shared_ptr<const CertificateFiles::Pair>>
CertificateFiles::Read() const {
  auto pair = std::make_shared<Pair>();
  BIO* bio = BIO_new_file(cert_file_.c_str(), "r");
  if (bio == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_cert_file: cannot read '", cert_file_, "'"));
  }
  pair->cert = PEM_read_bio_X509_AUX(bio, nullptr, nullptr, nullptr);
  pair->chain = sk_X509_new_null();
  while (X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    sk_X509_push(pair->chain, ca);
  }
  BIO_free(bio);
  if (pair->cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_cert_file: '", cert_file_, "' holds no PEM certificate"));
  }
  ERR_clear_error();  // the end of the chain reads as an error
  bio = BIO_new_file(key_file_.c_str(), "r");
  if (bio == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_key_file: cannot read '", key_file_, "'"));
  }
  pair->key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (pair->key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_key_file: '", key_file_, "': ", OpenSslError()));
  }
  if (X509_check_private_key(pair->cert, pair->key) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_key_file: '", key_file_,
        "' is not the key of the certificate in '", cert_file_, "'"));
  }
  return pair;
}

std::shared_ptr<const CertificateFiles::Pair> CertificateFiles::Current() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (now - checked_ < absl::Seconds(1)) return pair_;
  checked_ = now;
  const Stamp stamp = StampNow();
  if (stamp == stamp_) return pair_;
  absl::StatusOr<std::shared_ptr<const Pair>> pair = Read();
  if (!pair.ok()) {
    // Perhaps half-written: tried again at the next check.
    LOG(WARNING) << "the HTTP port keeps its certificate: "
                 << pair.status().message();
    return pair_;
  }
  LOG(INFO) << "the HTTP port serves the renewed certificate in '" << cert_file_
            << "'";
  pair_ = *std::move(pair);
  stamp_ = stamp;
  return pair_;
}

int CertificateFiles::OnHandshake(SSL* ssl, void* self) {
  const std::shared_ptr<const Pair> pair =
      static_cast<CertificateFiles*>(self)->Current();
  // The SSL takes its own references to all three.
  return SSL_use_cert_and_key(ssl, pair->cert, pair->key, pair->chain,
                              /*override=*/1) == 1
             ? 1
             : 0;
}

void CertificateFiles::Install(SSL_CTX* ctx) {
  SSL_CTX_set_cert_cb(ctx, &CertificateFiles::OnHandshake, this);
}

}  // namespace loopserve
