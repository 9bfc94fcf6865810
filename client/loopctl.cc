// loopctl: the command-line client of loopserve.
//
//   loopctl [--server TARGET] [--lb round_robin] list
//   loopctl describe PIPELINE [--json]
//   loopctl run PIPELINE -i num_steps=5 -i x=0 -i latents=@noise.npy
//           [--stream NAME].. [--output NAME].. [--every K] [--latest]
//           [--preview] [--save-dir DIR] [--timeout S] [--request-id ID]
//   loopctl health [SERVICE]
//
// TARGET is any gRPC target (dns:///loopserve-headless:50051 reaches every
// replica); it defaults to $LOOPSERVE_SERVER, else localhost:50051. Exits
// non-zero, with the server's status on stderr, on any failure.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/loop_client.h"
#include "client/npy.h"
#include "loopserve/v1/datatype.h"
#include "util/file.h"
#include "util/malloc_tuning.h"
#include "util/png.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

constexpr char kUsage[] =
    R"(usage: loopctl [--server TARGET] [--lb POLICY] COMMAND ...

commands:
  list                         the pipelines the server serves
  describe PIPELINE [--json]   a pipeline's inputs, iteration outputs, outputs
  run PIPELINE [options]       run a pipeline and print every iteration
  resume FILE [options]        continue the run a checkpoint file (from
                               --checkpoint-dir) was taken from, on any
                               replica; -i NAME=VALUE forks it (inputs
                               read during the loop may change)
  health [SERVICE]             the server's health ("" or a service name)

flags (each takes --flag VALUE or --flag=VALUE):
  --server TARGET      the server; default: $LOOPSERVE_SERVER, else
                       localhost:50051
  --lb POLICY          load balancing over TARGET's addresses: pick_first or
                       round_robin; default: pick_first
  --json               describe: the description as JSON; run, resume: one
                       JSON object per line and event ({"started": ...},
                       {"iteration": ...}, {"result": ...}, or {"error":
                       {"code", "message"}}), tensors' bytes in base64;
                       default: off
  --tls_ca_file FILE   speak TLS, trusting the server certificates this PEM
                       CA bundle signed; default: plaintext
  --tls_cert_file FILE, --tls_key_file FILE
                       this client's certificate and key (PEM), for a
                       server that requires them (mTLS); default: none
  --token_file FILE    send the token in FILE as `authorization: Bearer
                       TOKEN` (a server with --auth_tokens_file asks for
                       it); default: $LOOPSERVE_TOKEN_FILE, else none
run flags:
  -i, --input NAME=VALUE
                       an input: 5, 0.5, true, text, or @file.npy (repeat);
                       default: none, the pipeline's defaults apply
  --stream NAME        iteration output to stream (repeat); default: all
  --output NAME        final output to return (repeat); default: all
  --every K            stream every K-th iteration (the last always);
                       default: 1
  --latest             drop stale iterations instead of slowing the run;
                       default: off (lossless)
  --preview            stream a PNG latent preview with each iteration;
                       default: off (on with --save-dir when the pipeline
                       has previews)
  --save-dir DIR       write streamed tensors as NAME_INDEX.npy, previews as
                       preview_INDEX.png, final outputs as NAME.npy and RGB
                       images also as NAME.png; default: none
  --checkpoint-dir DIR write each streamed iteration's checkpoint as
                       LOOP_INDEX.ckpt (LOOP: the loop's name), for
                       `loopctl resume`; default: none
  --timeout S          deadline in seconds; default: none
  --request-id ID      echoed back in RunStarted; default: none
  -h, --help           this text

TARGET is any gRPC target: HOST:PORT, dns:///HOST:PORT (every address the
name resolves to), ipv4:ADDR:PORT,ADDR:PORT. --lb round_robin spreads calls
over every address, skipping servers that are loading or draining;
pick_first uses one.
)";

// The token a --token_file holds: its text without surrounding whitespace.
absl::StatusOr<std::string> ReadToken(const std::string& path) {
  const std::optional<std::string> text = ReadWholeFile(path);
  if (!text) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token_file: cannot read '", path, "'"));
  }
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token_file: '", path, "' is empty"));
  }
  return token;
}

absl::Status Usage(absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(problem, "\n\n", kUsage));
}

// ---- Printing values ----

std::string DescribeTensor(const v1::Tensor& t) {
  std::string text =
      absl::StrCat(t.datatype(), "[", absl::StrJoin(t.shape(), ","), "]");
  const absl::StatusOr<const DatatypeInfo*> info = FindDatatype(t.datatype());
  if (!info.ok()) return absl::StrCat(text, " (", info.status().message(), ")");
  int64_t n = 1;
  for (int64_t d : t.shape()) n *= d;
  if (n == 0) return text;
  if (t.raw_contents().size() != static_cast<size_t>(n * (*info)->itemsize)) {
    return absl::StrCat(text, " (", t.raw_contents().size(),
                        " bytes do not match the shape)");
  }
  double lo = std::numeric_limits<double>::infinity(), hi = -lo, sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = ElementAsDouble((*info)->datatype, t.raw_contents().data(),
                                     static_cast<size_t>(i));
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    sum += v;
  }
  std::ostringstream out;
  out << text << " min=" << lo << " max=" << hi << " mean=" << sum / n;
  return out.str();
}

std::string FormatValue(const v1::Value& v) {
  switch (v.kind_case()) {
    case v1::Value::kTensor:
      return DescribeTensor(v.tensor());
    case v1::Value::kInt64Value:
      return absl::StrCat(v.int64_value());
    case v1::Value::kDoubleValue:
      return absl::StrCat(v.double_value());
    case v1::Value::kBoolValue:
      return v.bool_value() ? "true" : "false";
    case v1::Value::kStringValue:
      return absl::StrCat("\"", v.string_value(), "\"");
    case v1::Value::kListValue: {
      std::vector<std::string> items;
      for (const v1::Value& item : v.list_value().values()) {
        items.push_back(FormatValue(item));
      }
      return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
    }
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return "(unset)";
}

std::string FormatValues(
    const google::protobuf::Map<std::string, v1::Value>& values) {
  std::vector<std::string> names;
  for (const auto& [name, value] : values) names.push_back(name);
  std::sort(names.begin(), names.end());
  std::vector<std::string> parts;
  for (const std::string& name : names) {
    parts.push_back(absl::StrCat(name, " = ", FormatValue(values.at(name))));
  }
  return absl::StrJoin(parts, "  ");
}

// ---- Commands ----

absl::StatusOr<v1::Value> ParseInputValue(absl::string_view text) {
  v1::Value value;
  int64_t i;
  double d;
  if (absl::StartsWith(text, "@")) {
    absl::StatusOr<v1::Tensor> tensor =
        ReadNpyFile(std::string(text.substr(1)));
    if (!tensor.ok()) return tensor.status();
    *value.mutable_tensor() = *std::move(tensor);
  } else if (absl::SimpleAtoi(text, &i)) {
    value.set_int64_value(i);
  } else if (absl::SimpleAtod(text, &d)) {
    value.set_double_value(d);
  } else if (text == "true" || text == "false") {
    value.set_bool_value(text == "true");
  } else {
    value.set_string_value(std::string(text));
  }
  return value;
}

absl::Status List(LoopClient& client) {
  absl::StatusOr<std::vector<v1::PipelineSummary>> pipelines =
      client.ListPipelines();
  if (!pipelines.ok()) return pipelines.status();
  for (const v1::PipelineSummary& p : *pipelines) {
    std::cout << p.name() << "\t" << p.description() << "\n";
  }
  return absl::OkStatus();
}

void PrintParams(
    absl::string_view title,
    const google::protobuf::RepeatedPtrField<v1::ParamSpec>& params,
    bool inputs) {
  std::cout << title << ":\n";
  if (params.empty()) {
    std::cout << "  (none)\n";
    return;
  }
  size_t name_width = 4, type_width = 4;
  for (const v1::ParamSpec& p : params) {
    name_width = std::max(name_width, p.name().size());
    type_width = std::max(type_width, p.type().size());
  }
  std::cout << "  " << std::left << std::setw(name_width) << "NAME"
            << "  " << std::setw(type_width) << "TYPE"
            << "  ";
  if (inputs)
    std::cout << std::setw(8) << "REQUIRED"
              << "  DEFAULT   ";
  std::cout << "DESCRIPTION\n";
  for (const v1::ParamSpec& p : params) {
    std::cout << "  " << std::setw(name_width) << p.name() << "  "
              << std::setw(type_width) << p.type() << "  ";
    if (inputs) {
      std::cout << std::setw(8) << (p.required() ? "yes" : "no") << "  "
                << std::setw(8)
                << (p.has_default_value() ? FormatValue(p.default_value())
                                          : "-")
                << "  ";
    }
    std::cout << p.description();
    if (p.choices_size() > 0) {
      std::cout << " (one of: " << absl::StrJoin(p.choices(), ", ") << ")";
    }
    std::cout << "\n";
  }
}

// `message` in protobuf's JSON mapping with the proto's field names; one
// line unless `indent`.
std::string ToJson(const google::protobuf::Message& message,
                   bool indent = false) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = indent;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &text, options);
  return text;
}

absl::Status Describe(LoopClient& client, const std::string& name, bool json) {
  absl::StatusOr<v1::PipelineDescription> d = client.DescribePipeline(name);
  if (!d.ok()) return d.status();
  if (json) {
    std::cout << ToJson(*d, /*indent=*/true);
    return absl::OkStatus();
  }
  std::cout << d->name() << ": " << d->description() << "\n\n";
  PrintParams("inputs", d->inputs(), true);
  std::cout << "\n";
  PrintParams("iteration outputs", d->iteration_outputs(), false);
  std::cout << "\n";
  PrintParams("outputs", d->outputs(), false);
  return absl::OkStatus();
}

struct RunArgs {
  std::string pipeline;
  v1::RunRequest request;
  std::string save_dir;
  std::string checkpoint_dir;
  std::optional<absl::Duration> timeout;
  bool preview_given = false;  // --preview
  bool json = false;           // --json: one JSON object per event
};

// One line of --json output: {"KIND": MESSAGE}.
void PrintJsonEvent(absl::string_view kind,
                    const google::protobuf::Message& message) {
  std::cout << "{\"" << kind << "\":" << ToJson(message) << "}\n" << std::flush;
}

// The --json line of a failed run: {"error": {"code", "message"}}.
void PrintJsonError(const absl::Status& status) {
  google::protobuf::Struct error;
  (*error.mutable_fields())["code"].set_string_value(
      absl::StatusCodeToString(status.code()));
  (*error.mutable_fields())["message"].set_string_value(
      std::string(status.message()));
  PrintJsonEvent("error", error);
}

// A terminal's progress line: a bar, the step, steps/s and the time left,
// measured from the first iteration this client saw.
class Progress {
 public:
  std::string Line(const v1::Iteration& it) {
    const auto now = std::chrono::steady_clock::now();
    if (!first_.has_value()) first_ = {it.index(), now};
    const double seconds =
        std::chrono::duration<double>(now - first_->second).count();
    const int64_t done = it.index() - first_->first;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * (it.index() + 1) / it.total());
    std::string line = absl::StrCat("[", std::string(filled, '#'),
                                    std::string(kWidth - filled, ' '), "] ",
                                    it.index() + 1, "/", it.total());
    if (done > 0 && seconds > 0) {
      const double rate = done / seconds;
      absl::StrAppend(&line,
                      absl::StrFormat("  %.1f steps/s  ETA %.1f s", rate,
                                      (it.total() - it.index() - 1) / rate));
    }
    return line;
  }

 private:
  std::optional<std::pair<int64_t, std::chrono::steady_clock::time_point>>
      first_;
};

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status SaveValue(const std::string& dir, const std::string& stem,
                       const v1::Value& value) {
  v1::Tensor tensor;
  if (value.has_tensor()) {
    tensor = value.tensor();
  } else if (value.kind_case() == v1::Value::kInt64Value) {
    tensor.set_datatype("INT64");
    int64_t v = value.int64_value();
    tensor.set_raw_contents(std::string(reinterpret_cast<char*>(&v), 8));
  } else if (value.kind_case() == v1::Value::kDoubleValue) {
    tensor.set_datatype("FP64");
    double v = value.double_value();
    tensor.set_raw_contents(std::string(reinterpret_cast<char*>(&v), 8));
  } else {
    return absl::OkStatus();  // strings, lists: nothing .npy can hold
  }
  RETURN_IF_ERROR(WriteNpyFile(
      (std::filesystem::path(dir) / (stem + ".npy")).string(), tensor));
  // A UINT8 [B,H,W,3] tensor is a batch of RGB images: also NAME.png, the
  // batch side by side.
  const auto& shape = tensor.shape();
  if (tensor.datatype() != "UINT8" || shape.size() != 4 || shape[3] != 3 ||
      tensor.raw_contents().size() !=
          static_cast<size_t>(shape[0] * shape[1] * shape[2] * 3)) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(const std::string png,
                   EncodePngSideBySide(reinterpret_cast<const uint8_t*>(
                                           tensor.raw_contents().data()),
                                       shape[0], shape[1], shape[2]));
  return WriteFile((std::filesystem::path(dir) / (stem + ".png")).string(),
                   png);
}

absl::Status CreateDirectory(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot create ", dir, ": ", error.message()));
  }
  return absl::OkStatus();
}

absl::Status Run(LoopClient& client, RunArgs& args) {
  const bool tty = isatty(STDOUT_FILENO);
  if (!args.checkpoint_dir.empty()) {
    RETURN_IF_ERROR(CreateDirectory(args.checkpoint_dir));
    args.request.mutable_stream()->set_checkpoints(true);
  }
  if (!args.save_dir.empty()) {
    RETURN_IF_ERROR(CreateDirectory(args.save_dir));
    // Saving a run of a pipeline with previews saves them too: the pictures
    // of the loop at work are what a saved run is usually for.
    if (!args.preview_given) {
      absl::StatusOr<v1::PipelineDescription> description =
          client.DescribePipeline(args.request.pipeline());
      if (description.ok() && description->preview()) {
        args.request.mutable_stream()->set_preview(true);
      }
    }
  }
  absl::Status save_status;
  RunCallbacks callbacks;
  Progress progress;
  callbacks.on_started = [&](const v1::RunStarted& started) {
    if (args.json) return PrintJsonEvent("started", started);
    if (!tty) {
      std::cout << "started " << started.run_id() << " (queued "
                << started.queue_ms() << " ms)\n";
    }
    if (!started.resumed_loop().empty()) {
      std::cout << "resumed " << started.resumed_loop() << " at iteration "
                << started.first_iteration() + 1 << "\n";
    }
    // What the server filled in (a random seed, the defaults): given back
    // with -i, they reproduce this run.
    if (!started.resolved_inputs().empty()) {
      std::cout << "resolved " << FormatValues(started.resolved_inputs())
                << "\n";
    }
  };
  callbacks.on_iteration = [&](const v1::Iteration& it) {
    const std::string values = FormatValues(it.values());
    const std::string dropped =
        it.dropped_before() > 0
            ? absl::StrCat(" (", it.dropped_before(), " dropped)")
            : "";
    if (args.json) {
      PrintJsonEvent("iteration", it);
    } else if (tty && it.total() > 0) {
      std::cout << "\r\033[K" << progress.Line(it) << "  " << values
                << std::flush;
    } else {
      std::cout << "iteration " << it.index() + 1;
      if (it.total() > 0) std::cout << "/" << it.total();
      std::cout << " [" << it.loop() << "]" << dropped << "  " << values
                << "\n";
    }
    if (!it.checkpoint().empty() && save_status.ok()) {
      const std::string loop = it.loop().substr(it.loop().rfind('/') + 1);
      save_status = WriteFile((std::filesystem::path(args.checkpoint_dir) /
                               absl::StrCat(loop, "_", it.index(), ".ckpt"))
                                  .string(),
                              it.checkpoint());
    }
    if (!args.save_dir.empty() && save_status.ok()) {
      for (const auto& [name, value] : it.values()) {
        if (!value.has_tensor()) continue;
        save_status = SaveValue(args.save_dir,
                                absl::StrCat(name, "_", it.index()), value);
      }
      if (!it.preview_png().empty() && save_status.ok()) {
        save_status = WriteFile((std::filesystem::path(args.save_dir) /
                                 absl::StrCat("preview_", it.index(), ".png"))
                                    .string(),
                                it.preview_png());
      }
    }
  };
  RunCallOptions options{.timeout = args.timeout};
  absl::StatusOr<v1::RunResult> result =
      client.Run(args.request, callbacks, options);
  if (tty && !args.json) std::cout << "\n";
  if (!result.ok()) {
    if (args.json) PrintJsonError(result.status());
    return result.status();
  }
  if (args.json) {
    PrintJsonEvent("result", *result);
  } else {
    std::cout << "result  " << FormatValues(result->outputs()) << "\n";
    const v1::RunStats& s = result->stats();
    std::cout << "stats   iterations=" << s.iterations()
              << " sent=" << s.iterations_sent()
              << " dropped=" << s.iterations_dropped()
              << " queue_ms=" << s.queue_ms() << " run_ms=" << s.run_ms()
              << " mean_batch_size=" << s.mean_batch_size() << "\n";
  }
  if (!args.save_dir.empty()) {
    for (const auto& [name, value] : result->outputs()) {
      if (save_status.ok()) save_status = SaveValue(args.save_dir, name, value);
    }
  }
  return save_status;
}

absl::Status Health(LoopClient& client, const std::string& service) {
  auto status = client.Health(service);
  if (!status.ok()) return status.status();
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
                   *status)
            << "\n";
  if (*status != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError("not serving");
  }
  return absl::OkStatus();
}

// What a loopctl command line asks for.
struct Invocation {
  std::string server;
  std::string token_file;
  ConnectOptions connect;
  bool json = false;
  // --help: print the usage and do nothing else.
  bool help = false;
  // The command and its arguments.
  std::vector<std::string> positional;
  RunArgs run;
};

// The command line, parsed (flags may come anywhere); INVALID_ARGUMENT
// with the usage for a malformed one. $LOOPSERVE_SERVER and
// $LOOPSERVE_TOKEN_FILE are the defaults of --server and --token_file.
absl::StatusOr<Invocation> ParseArgs(const std::vector<std::string>& args) {
  Invocation in;
  const char* env = std::getenv("LOOPSERVE_SERVER");
  in.server = env != nullptr ? env : "localhost:50051";
  const char* token_env = std::getenv("LOOPSERVE_TOKEN_FILE");
  in.token_file = token_env != nullptr ? token_env : "";
  for (size_t i = 0; i < args.size(); ++i) {
    // --flag=value is --flag value.
    std::string arg = args[i];
    std::optional<std::string> inline_value;
    if (absl::StartsWith(arg, "--")) {
      if (const size_t eq = arg.find('='); eq != std::string::npos) {
        inline_value = arg.substr(eq + 1);
        arg.resize(eq);
      }
    }
    auto value = [&](absl::string_view flag) -> absl::StatusOr<std::string> {
      if (inline_value.has_value()) {
        std::string v = *std::move(inline_value);
        inline_value.reset();
        return v;
      }
      if (i + 1 >= args.size())
        return Usage(absl::StrCat(flag, " needs a value"));
      return args[++i];
    };
    auto take = [&](absl::string_view flag, std::string& out) -> absl::Status {
      absl::StatusOr<std::string> v = value(flag);
      if (!v.ok()) return v.status();
      out = *v;
      return absl::OkStatus();
    };
    // A switch (--json) given a value: --json=true or --json=false.
    bool on = true;
    if (inline_value.has_value() && (arg == "--json" || arg == "--preview" ||
                                     arg == "--latest" || arg == "--help")) {
      if (*inline_value != "true" && *inline_value != "false") {
        return Usage(absl::StrCat(arg, " takes no value, or true or false"));
      }
      on = *inline_value == "true";
      inline_value.reset();
    }
    std::string v;
    if (arg == "-h" || arg == "--help") {
      if (!on) continue;
      in.help = true;
      return in;
    } else if (arg == "--server") {
      if (auto s = take(arg, in.server); !s.ok()) return s;
    } else if (arg == "--lb") {
      if (auto s = take(arg, in.connect.lb_policy); !s.ok()) return s;
    } else if (arg == "--tls_ca_file") {
      if (auto s = take(arg, in.connect.tls_ca_file); !s.ok()) return s;
    } else if (arg == "--tls_cert_file") {
      if (auto s = take(arg, in.connect.tls_cert_file); !s.ok()) return s;
    } else if (arg == "--tls_key_file") {
      if (auto s = take(arg, in.connect.tls_key_file); !s.ok()) return s;
    } else if (arg == "--token_file") {
      if (auto s = take(arg, in.token_file); !s.ok()) return s;
    } else if (arg == "--json") {
      in.json = on;
    } else if (arg == "--preview") {
      in.run.request.mutable_stream()->set_preview(on);
      in.run.preview_given = true;
    } else if (arg == "--latest") {
      in.run.request.mutable_stream()->set_backpressure(
          on ? v1::StreamOptions::LATEST : v1::StreamOptions::BLOCK);
    } else if (arg == "-i" || arg == "--input") {
      if (auto s = take(arg, v); !s.ok()) return s;
      const size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0) {
        return Usage(absl::StrCat("-i takes NAME=VALUE, got '", v, "'"));
      }
      absl::StatusOr<v1::Value> parsed = ParseInputValue(v.substr(eq + 1));
      if (!parsed.ok()) return parsed.status();
      (*in.run.request.mutable_inputs())[v.substr(0, eq)] = *std::move(parsed);
    } else if (arg == "--stream") {
      if (auto s = take(arg, v); !s.ok()) return s;
      in.run.request.mutable_stream()->add_values(v);
    } else if (arg == "--output") {
      if (auto s = take(arg, v); !s.ok()) return s;
      in.run.request.add_outputs(v);
    } else if (arg == "--every") {
      if (auto s = take(arg, v); !s.ok()) return s;
      uint32_t every;
      if (!absl::SimpleAtoi(v, &every)) return Usage("--every takes a count");
      in.run.request.mutable_stream()->set_every(every);
    } else if (arg == "--save-dir") {
      if (auto s = take(arg, in.run.save_dir); !s.ok()) return s;
    } else if (arg == "--checkpoint-dir") {
      if (auto s = take(arg, in.run.checkpoint_dir); !s.ok()) return s;
    } else if (arg == "--timeout") {
      if (auto s = take(arg, v); !s.ok()) return s;
      double seconds;
      if (!absl::SimpleAtod(v, &seconds) || seconds <= 0) {
        return Usage("--timeout takes seconds");
      }
      in.run.timeout = absl::Seconds(seconds);
    } else if (arg == "--request-id") {
      if (auto s = take(arg, v); !s.ok()) return s;
      in.run.request.set_request_id(v);
    } else if (absl::StartsWith(arg, "-")) {
      return Usage(absl::StrCat("unknown option ", arg));
    } else {
      in.positional.push_back(arg);
    }
  }
  return in;
}

// Connects and carries out the command.
absl::Status Execute(Invocation& in) {
  const std::vector<std::string>& positional = in.positional;
  if (positional.empty()) return Usage("no command");
  if (!in.token_file.empty()) {
    ASSIGN_OR_RETURN(in.connect.token, ReadToken(in.token_file));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<LoopClient> client,
                   LoopClient::Connect(in.server, in.connect));
  RunArgs& run = in.run;
  const std::string& command = positional[0];
  if (command == "list" && positional.size() == 1) return List(*client);
  if (command == "describe" && positional.size() == 2) {
    return Describe(*client, positional[1], in.json);
  }
  if (command == "run" && positional.size() == 2) {
    run.request.set_pipeline(positional[1]);
    run.json = in.json;
    return Run(*client, run);
  }
  if (command == "resume" && positional.size() == 2) {
    std::optional<std::string> bytes = ReadWholeFile(positional[1]);
    if (!bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("resume: cannot read '", positional[1], "'"));
    }
    // The pipeline is the checkpoint's.
    run.request.set_resume_from(*std::move(bytes));
    run.json = in.json;
    return Run(*client, run);
  }
  if (command == "health" && positional.size() <= 2) {
    return Health(*client, positional.size() == 2 ? positional[1] : "");
  }
  return Usage(absl::StrCat("bad command: ", absl::StrJoin(positional, " ")));
}

absl::Status Main(const std::vector<std::string>& args) {
  ASSIGN_OR_RETURN(Invocation in, ParseArgs(args));
  if (in.help) {
    std::cout << kUsage;
    return absl::OkStatus();
  }
  return Execute(in);
}

}  // namespace
}  // namespace loopserve

int main(int argc, char** argv) {
  loopserve::TuneMallocForStreaming();  // Note [malloc trimming]
  absl::Status status =
      loopserve::Main(std::vector<std::string>(argv + 1, argv + argc));
  if (!status.ok()) {
    std::cerr << "loopctl: " << absl::StatusCodeToString(status.code()) << ": "
              << status.message() << std::endl;
    return 1;
  }
  return 0;
}
