// loopserve: serves loop pipelines over gRPC (loopserve.v1 and the Open
// Inference Protocol) and HTTP (JSON, server-sent events, a preview page).
//
//   loopserve --port=50051 --device=auto [--config=pipelines.pbtxt]
//             [--plugin=libmy_blocks.so]...
//   loopserve --check_config=pipelines.pbtxt   # validate, then exit
//
// Without --config it serves the embedded default configuration
// (app/default_config.pbtxt), its models from --model_dir. Each --plugin
// adds a shared library's block and component types (blocks/core/plugin.h).
//
// It listens at once, with readiness (health) NOT_SERVING while it loads its
// pipelines, then prints a ready line on stderr ("loopserve: serving 5
// pipelines on 0.0.0.0:50051 ..."). Prometheus metrics are served on
// --metrics_port at /metrics, the HTTP front and its page on --http_port.
// SIGTERM or SIGINT drains: readiness turns
// NOT_SERVING, new runs get UNAVAILABLE, runs in flight get
// --shutdown_grace_s to finish and are then cancelled; the process exits 0.
// A run that does not end OK writes one log line (glog, on stderr;
// --log_level).
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "app/default_pipelines.h"
#include "engine/device.h"
#include "engine/run_log.h"
#include "server/loop_server.h"
#include "util/malloc_tuning.h"
#include "util/status_macros.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on");
ABSL_FLAG(int32_t, port, 50051, "Port to listen on; 0 picks a free one");
ABSL_FLAG(std::string, device, "auto",
          "Where pipelines run: auto, cpu, cuda or cuda:N");
ABSL_FLAG(int32_t, intra_op_threads, 1,
          "Threads libtorch's CPU kernels use within one op (0: one per "
          "core); runs and batched rows are loopserve's parallelism");
ABSL_FLAG(std::string, config, "",
          "Server configuration (ServerConfig, protobuf text format); empty "
          "serves the embedded default");
ABSL_FLAG(std::string, check_config, "",
          "Validate this configuration file (loading its components on "
          "--device), print the result and exit");
ABSL_FLAG(std::string, model_dir, std::string(loopserve::DefaultModelDir()),
          "Where the embedded default configuration's models are");
ABSL_FLAG(int32_t, max_concurrent_runs, 32,
          "Runs executing at once (a run waiting for its batch holds a "
          "thread, no CPU)");
ABSL_FLAG(int64_t, max_batch_size, 16,
          "Rows one denoiser call may hold when runs in flight share it; 1 "
          "turns step-level batching off");
ABSL_FLAG(double, batch_window_ms, 1,
          "How long a denoiser call waits for the other runs in flight "
          "before its batch launches without them");
ABSL_FLAG(int32_t, batch_lanes, 2,
          "Batches of one denoiser that may run at once: 2 lets a CPU run "
          "small forwards side by side; 1 feeds a GPU one large batch at a "
          "time");
ABSL_FLAG(int32_t, max_runs_per_client, 16,
          "Most runs one client (its authenticated principal, else its "
          "address) may have queued or running; 0: no limit");
ABSL_FLAG(double, stream_idle_timeout_s, 60,
          "A run whose client has taken no message for this long is ended "
          "with DEADLINE_EXCEEDED and its slot freed; 0: never");
ABSL_FLAG(int32_t, max_queued_runs, 64,
          "Runs waiting for a worker; past this, RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_iterations, 1'000'000,
          "Largest iteration count (num_steps) a request may ask for");
ABSL_FLAG(int64_t, max_tensor_bytes, int64_t{256} << 20,
          "Largest input tensor, in bytes");
ABSL_FLAG(int32_t, max_tensor_rank, 8,
          "Most dimensions an input tensor may have");
ABSL_FLAG(int64_t, max_tensor_elements, int64_t{1} << 28,
          "Most elements an input tensor may have");
ABSL_FLAG(int64_t, max_string_bytes, 64 << 10,
          "Longest string input (a prompt), in bytes");
ABSL_FLAG(bool, allow_non_finite_inputs, false,
          "Accept NaN and Inf in floating-point inputs (refused by default: "
          "they make NaN images)");
ABSL_FLAG(int32_t, max_request_bytes, 64 << 20,
          "Largest request (a gRPC message, an HTTP body), in bytes");
ABSL_FLAG(int64_t, max_request_bytes_in_flight, int64_t{1} << 30,
          "Most request bytes the server holds at once: the requests of "
          "runs queued or running and HTTP bodies being read; past it a "
          "request is RESOURCE_EXHAUSTED (0: no bound)");
ABSL_FLAG(int64_t, max_batch_bytes, 1 << 20,
          "Payload bytes packed into one IterationBatch message");
ABSL_FLAG(int32_t, stream_encoder_threads, 4,
          "Threads that finish streamed iterations off the loops' threads: "
          "wait for values copied off the device, draw previews");
ABSL_FLAG(double, shutdown_grace_s, 30,
          "Seconds runs in flight get to finish after SIGTERM");
ABSL_FLAG(int32_t, http_port, 8000,
          "Port of the HTTP front (on --host): JSON API, server-sent events "
          "and the live preview page at /, with --port's TLS and tokens; 0 "
          "disables");
ABSL_FLAG(int32_t, metrics_port, 9464,
          "Port of the Prometheus endpoint (/metrics, on --host); 0 disables");
ABSL_FLAG(std::vector<std::string>, plugin, {},
          "A plugin (shared library) whose block and component types to "
          "serve; repeat the flag, or separate paths with commas");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain of the server: --port speaks TLS (with "
          "--tls_key_file); re-read when it changes");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of the server");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle: clients must present a certificate it signed "
          "(mTLS); its common name is the client's principal");
ABSL_FLAG(int32_t, health_port, 0,
          "A plaintext port that answers grpc.health.v1.Health only, for "
          "probes that cannot speak TLS; 0: none");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "File of `PRINCIPAL TOKEN` lines: every loopserve call must send "
          "`authorization: Bearer TOKEN`; re-read when it changes");
ABSL_FLAG(std::string, checkpoint_key_file, "",
          "Key (at least 16 bytes; `openssl rand -hex 32`) that signs and "
          "checks checkpoints: give every replica the same one so that a "
          "run resumes on any of them; unset: a random key per process");
ABSL_FLAG(std::string, log_level, "info",
          "debug (every run ends with a line), info, warning (every run "
          "that does not end OK) or error (server faults only)");

namespace loopserve {
namespace {

absl::StatusOr<BatchingOptions> Batching() {
  const int64_t rows = absl::GetFlag(FLAGS_max_batch_size);
  const double window_ms = absl::GetFlag(FLAGS_batch_window_ms);
  const int32_t lanes = absl::GetFlag(FLAGS_batch_lanes);
  if (rows < 1) {
    return absl::InvalidArgumentError("--max_batch_size must be >= 1");
  }
  if (lanes < 1) {
    return absl::InvalidArgumentError("--batch_lanes must be >= 1");
  }
  if (!(window_ms >= 0 && window_ms <= 10'000)) {
    return absl::InvalidArgumentError(
        "--batch_window_ms must be between 0 and 10000");
  }
  return BatchingOptions{
      .max_batch_size = rows,
      .window = std::chrono::microseconds(
          static_cast<int64_t>(std::llround(window_ms * 1000))),
      .lanes = lanes};
}

PipelineSources Sources(const std::string& config_path) {
  return {.config_path = config_path,
          .model_dir = absl::GetFlag(FLAGS_model_dir),
          .plugins = absl::GetFlag(FLAGS_plugin)};
}

absl::Status CheckConfig(const std::string& path) {
  ASSIGN_OR_RETURN(const c10::Device device,
                   ResolveDevice(absl::GetFlag(FLAGS_device)));
  ASSIGN_OR_RETURN(const PipelineCatalog catalog,
                   LoadPipelines(Sources(path), device));
  std::cout << path << ": OK, " << catalog.pipelines().size() << " pipelines:";
  for (const auto& pipeline : catalog.pipelines()) {
    std::cout << " " << pipeline->name;
  }
  std::cout << std::endl;
  for (const std::string& note : catalog.notes()) {
    std::cout << "note: " << note << std::endl;
  }
  return absl::OkStatus();
}

// The server's options, from the flags; INVALID_ARGUMENT naming the flag
// out of range.
absl::StatusOr<LoopServerOptions> OptionsFromFlags(c10::Device device) {
  LoopServerOptions options;
  options.address =
      absl::StrCat(absl::GetFlag(FLAGS_host), ":", absl::GetFlag(FLAGS_port));
  options.tls = {.cert_file = absl::GetFlag(FLAGS_tls_cert_file),
                 .key_file = absl::GetFlag(FLAGS_tls_key_file),
                 .client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file)};
  options.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  if (const int32_t port = absl::GetFlag(FLAGS_health_port); port > 0) {
    options.health_address = absl::StrCat(absl::GetFlag(FLAGS_host), ":", port);
  } else if (port < 0) {
    return absl::InvalidArgumentError("--health_port must be >= 0");
  }
  EngineOptions& engine = options.engine;
  engine.executor = {
      .max_concurrent_runs = absl::GetFlag(FLAGS_max_concurrent_runs),
      .max_queued_runs = absl::GetFlag(FLAGS_max_queued_runs)};
  engine.limits.max_iterations = absl::GetFlag(FLAGS_max_iterations);
  engine.max_request_bytes_in_flight =
      absl::GetFlag(FLAGS_max_request_bytes_in_flight);
  if (engine.max_request_bytes_in_flight < 0) {
    return absl::InvalidArgumentError(
        "--max_request_bytes_in_flight must be >= 0");
  }
  engine.max_runs_per_client = absl::GetFlag(FLAGS_max_runs_per_client);
  engine.stream_idle_timeout =
      absl::Seconds(absl::GetFlag(FLAGS_stream_idle_timeout_s));
  if (engine.max_runs_per_client < 0 ||
      !(absl::GetFlag(FLAGS_stream_idle_timeout_s) >= 0)) {
    return absl::InvalidArgumentError(
        "--max_runs_per_client and --stream_idle_timeout_s must be >= 0");
  }
  DecodeLimits& decode = engine.limits.decode;
  decode.max_tensor_bytes = absl::GetFlag(FLAGS_max_tensor_bytes);
  decode.max_tensor_rank = absl::GetFlag(FLAGS_max_tensor_rank);
  decode.max_tensor_elements = absl::GetFlag(FLAGS_max_tensor_elements);
  decode.max_string_bytes = absl::GetFlag(FLAGS_max_string_bytes);
  decode.allow_non_finite = absl::GetFlag(FLAGS_allow_non_finite_inputs);
  if (decode.max_tensor_rank < 0 || decode.max_tensor_elements < 0 ||
      decode.max_string_bytes < 0 || decode.max_tensor_bytes < 0) {
    return absl::InvalidArgumentError(
        "--max_tensor_rank, --max_tensor_elements, --max_tensor_bytes and "
        "--max_string_bytes must be >= 0");
  }
  if (const std::string path = absl::GetFlag(FLAGS_checkpoint_key_file);
      !path.empty()) {
    ASSIGN_OR_RETURN(engine.checkpoint_key, CheckpointKey::FromFile(path));
  } else {
    std::cerr << "loopserve: no --checkpoint_key_file: checkpoints resume "
                 "only on this process"
              << std::endl;
  }
  engine.stream.max_batch_bytes = absl::GetFlag(FLAGS_max_batch_bytes);
  engine.stream.max_queued_bytes = 4 * engine.stream.max_batch_bytes;
  engine.stream_encoder_threads = absl::GetFlag(FLAGS_stream_encoder_threads);
  engine.device = device;
  options.max_receive_message_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  if (const int32_t port = absl::GetFlag(FLAGS_metrics_port); port > 0) {
    options.metrics_address =
        absl::StrCat(absl::GetFlag(FLAGS_host), ":", port);
  } else if (port < 0) {
    return absl::InvalidArgumentError("--metrics_port must be >= 0");
  }
  if (const int32_t port = absl::GetFlag(FLAGS_http_port); port > 0) {
    options.http_address = absl::StrCat(absl::GetFlag(FLAGS_host), ":", port);
  } else if (port < 0) {
    return absl::InvalidArgumentError("--http_port must be >= 0");
  }
  if (engine.executor.max_concurrent_runs < 1 ||
      engine.executor.max_queued_runs < 0) {
    return absl::InvalidArgumentError(
        "--max_concurrent_runs must be >= 1 and --max_queued_runs >= 0");
  }

  return options;
}

// The line that says the server is ready, and where it listens.
void PrintReady(const LoopServer& server, const LoopServerOptions& options,
                size_t pipelines, c10::Device device) {
  std::cerr << "loopserve: serving " << pipelines << " pipelines on "
            << absl::GetFlag(FLAGS_host) << ":" << server.port() << " (device "
            << device.str() << ")";
  if (!options.tls.cert_file.empty()) {
    std::cerr << (options.tls.client_ca_file.empty() ? " over TLS"
                                                     : " over mTLS");
  }
  if (!options.auth_tokens_file.empty()) std::cerr << " with tokens";
  if (server.health_port() != 0) {
    std::cerr << ", health on :" << server.health_port();
  }
  if (server.http_port() != 0) {
    std::cerr << ", http on :" << server.http_port();
  }
  if (server.metrics_port() != 0) {
    std::cerr << ", metrics on :" << server.metrics_port() << "/metrics";
  }
  std::cerr << std::endl;
}

absl::Status Serve(const sigset_t& signals) {
  ASSIGN_OR_RETURN(const c10::Device device,
                   ResolveDevice(absl::GetFlag(FLAGS_device)));
  RETURN_IF_ERROR(SetIntraOpThreads(absl::GetFlag(FLAGS_intra_op_threads)));
  ASSIGN_OR_RETURN(const LoopServerOptions options, OptionsFromFlags(device));
  ASSIGN_OR_RETURN(const BatchingOptions batching, Batching());

  // Listen first, not ready, so that probes see a live process while the
  // pipelines load.
  ASSIGN_OR_RETURN(std::unique_ptr<LoopServer> server,
                   LoopServer::Start(options));
  std::cerr << "loopserve: loading pipelines (listening on "
            << absl::GetFlag(FLAGS_host) << ":" << server->port() << ")"
            << std::endl;
  ASSIGN_OR_RETURN(
      PipelineCatalog catalog,
      LoadPipelines(Sources(absl::GetFlag(FLAGS_config)), device, batching));
  for (const std::string& note : catalog.notes()) {
    std::cerr << "loopserve: note: " << note << std::endl;
  }
  const size_t pipelines = catalog.pipelines().size();
  server->Serve(std::move(catalog));
  PrintReady(*server, options, pipelines, device);

  int signal = 0;
  sigwait(&signals, &signal);
  std::cerr << "loopserve: " << strsignal(signal) << "; draining (grace "
            << absl::GetFlag(FLAGS_shutdown_grace_s) << " s)" << std::endl;
  server->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s)));
  std::cerr << "loopserve: stopped" << std::endl;
  return absl::OkStatus();
}

// absl's flags take a repeated flag's last value; --plugin accumulates: every
// occurrence (--plugin=A, --plugin A) is folded into one --plugin=A,B.
std::vector<char*> FoldRepeatedPlugins(int argc, char** argv,
                                       std::string& folded) {
  std::vector<char*> args{argv[0]};
  std::vector<std::string> plugins;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") {  // the rest is not flags
      args.insert(args.end(), argv + i, argv + argc);
      break;
    }
    if (absl::StartsWith(arg, "--plugin=")) {
      plugins.emplace_back(arg.substr(9));
    } else if (arg == "--plugin" && i + 1 < argc) {
      plugins.emplace_back(argv[++i]);
    } else {
      args.push_back(argv[i]);
    }
  }
  if (!plugins.empty()) {
    folded = absl::StrCat("--plugin=", absl::StrJoin(plugins, ","));
    args.insert(args.begin() + 1, folded.data());
  }
  return args;
}

}  // namespace
}  // namespace loopserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serves loop pipelines over gRPC.\n\n"
      "  loopserve [--port=50051] [--device=auto] [--config=FILE] "
      "[--plugin=PATH.so]...\n\n"
      "Flags take --flag=value or --flag value.");
  // --help lists this file's flags (absl's default looks for a file named
  // after the program, and finds none).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "app/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  // --version: "loopserve 0.1.0" and the libtorch it runs on.
  usage.version_string = [] {
    return absl::StrCat("loopserve " LOOPSERVE_VERSION "\n",
                        loopserve::LibtorchDescription(), "\n");
  };
  usage.normalize_filename = [](absl::string_view file) {
    const size_t at = file.rfind("app/");
    return std::string(at == absl::string_view::npos ? file : file.substr(at));
  };
  absl::SetFlagsUsageConfig(usage);
  std::string folded;
  std::vector<char*> args = loopserve::FoldRepeatedPlugins(argc, argv, folded);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (absl::Status status =
          loopserve::InitLogging(argv[0], absl::GetFlag(FLAGS_log_level));
      !status.ok()) {
    std::cerr << "loopserve: " << status.message() << std::endl;
    return 1;
  }
  if (const std::string path = absl::GetFlag(FLAGS_check_config);
      !path.empty()) {
    if (absl::Status status = loopserve::CheckConfig(path); !status.ok()) {
      std::cerr << "loopserve: " << status.message() << std::endl;
      return 1;
    }
    return 0;
  }
  loopserve::TuneMallocForStreaming();  // Note [malloc trimming]
  // Block the shutdown signals in every thread; the main thread waits for
  // them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  if (absl::Status status = loopserve::Serve(signals); !status.ok()) {
    std::cerr << "loopserve: " << status << std::endl;
    return 1;
  }
  return 0;
}
