// Streaming throughput over loopback: a loopserve server and one LoopClient
// in this process, talking TCP on 127.0.0.1.
//
//   build/bench/stream_bench [--int_steps=100000] [--tensor_steps=2000]
//
// 1. seed-loop with an int x, every iteration streamed losslessly (BLOCK):
//    iterations received per second.
// 2. seed-loop with a [1,4,64,64] FP32 x streamed every iteration: payload
//    GB/s, beside raw loopback TCP throughput measured in the same run (one
//    sender thread, one receiver, 64 KiB writes) as the ceiling.
// Each figure is the median of --repeats runs.
#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "app/default_pipelines.h"
#include "blocks/builtin_blocks.h"
#include "client/loop_client.h"
#include "engine/tensor_codec.h"
#include "server/loop_server.h"
#include "util/malloc_tuning.h"
#include "util/status_macros.h"

ABSL_FLAG(int64_t, int_steps, 100000, "Iterations of the int run");
ABSL_FLAG(int64_t, tensor_steps, 2000, "Iterations of the tensor run");
ABSL_FLAG(int, repeats, 7, "Runs per figure; the median is reported");
ABSL_FLAG(int64_t, max_batch_bytes, 1 << 20, "The server's --max_batch_bytes");

namespace loopserve {
namespace {

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Seconds one streamed run takes, and the iterations it delivered.
std::pair<double, int64_t> TimedRun(LoopClient& client,
                                    const v1::RunRequest& request) {
  int64_t received = 0;
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::RunResult> result =
      client.Run(request, {.on_batch = [&](const v1::IterationBatch& batch) {
                   received += batch.items_size();
                 }});
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (!result.ok()) {
    std::fprintf(stderr, "run failed: %s\n",
                 result.status().ToString().c_str());
    std::exit(1);
  }
  return {seconds, received};
}

// Raw loopback TCP: bytes per second from one thread to another.
double LoopbackBytesPerSecond(int64_t total_bytes) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("loopback socket");
    std::exit(1);
  }
  std::thread sender([&] {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      std::perror("connect");
      std::exit(1);
    }
    std::vector<char> chunk(64 << 10, 'x');
    for (int64_t sent = 0; sent < total_bytes;) {
      ssize_t n = write(fd, chunk.data(), chunk.size());
      if (n <= 0) break;
      sent += n;
    }
    close(fd);
  });
  int fd = accept(listener, nullptr, nullptr);
  std::vector<char> buffer(256 << 10);
  int64_t received = 0;
  const absl::Time start = absl::Now();
  while (true) {
    ssize_t n = read(fd, buffer.data(), buffer.size());
    if (n <= 0) break;
    received += n;
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  sender.join();
  close(fd);
  close(listener);
  return received / seconds;
}

int Main() {
  absl::StatusOr<PipelineCatalog> catalog = LoadDefaultPipelines(c10::kCPU);
  if (!catalog.ok()) {
    std::cerr << catalog.status() << std::endl;
    return 1;
  }
  LoopServerOptions options;
  options.address = "127.0.0.1:0";
  options.engine.stream.max_batch_bytes = absl::GetFlag(FLAGS_max_batch_bytes);
  options.engine.stream.max_queued_bytes =
      4 * options.engine.stream.max_batch_bytes;
  absl::StatusOr<std::unique_ptr<LoopServer>> server =
      LoopServer::Start(options, *std::move(catalog));
  if (!server.ok()) return 1;
  absl::StatusOr<std::unique_ptr<LoopClient>> connected =
      LoopClient::Connect(absl::StrCat("127.0.0.1:", (*server)->port()));
  if (!connected.ok()) return 1;
  std::unique_ptr<LoopClient> client = *std::move(connected);
  const int repeats = absl::GetFlag(FLAGS_repeats);

  // 1. Int x.
  const int64_t int_steps = absl::GetFlag(FLAGS_int_steps);
  v1::RunRequest int_request;
  int_request.set_pipeline("seed-loop");
  (*int_request.mutable_inputs())["num_steps"].set_int64_value(int_steps);
  (*int_request.mutable_inputs())["x"].set_int64_value(0);
  TimedRun(*client, int_request);  // warm-up: connection, allocators
  std::vector<double> rates;
  for (int r = 0; r < repeats; ++r) {
    auto [seconds, received] = TimedRun(*client, int_request);
    if (received != int_steps) {
      std::fprintf(stderr, "lost iterations: %ld of %ld\n", received,
                   int_steps);
      return 1;
    }
    rates.push_back(received / seconds);
  }

  // 2. Tensor x, against raw loopback.
  const int64_t tensor_steps = absl::GetFlag(FLAGS_tensor_steps);
  v1::RunRequest tensor_request;
  tensor_request.set_pipeline("seed-loop");
  (*tensor_request.mutable_inputs())["num_steps"].set_int64_value(tensor_steps);
  const at::Tensor x = at::zeros({1, 4, 64, 64});
  if (!EncodeTensor(x,
                    *(*tensor_request.mutable_inputs())["x"].mutable_tensor())
           .ok()) {
    return 1;
  }
  const double payload = static_cast<double>(x.nbytes()) * tensor_steps;
  TimedRun(*client, tensor_request);
  std::vector<double> stream_rates, tcp_rates, ratios;
  for (int r = 0; r < repeats; ++r) {
    auto [seconds, received] = TimedRun(*client, tensor_request);
    if (received != tensor_steps) return 1;
    stream_rates.push_back(payload / seconds);
    tcp_rates.push_back(LoopbackBytesPerSecond(static_cast<int64_t>(payload)));
    ratios.push_back(stream_rates.back() / tcp_rates.back());
  }

  const double stream = Median(stream_rates), tcp = Median(tcp_rates);
  std::printf("%-58s %14s\n", "figure (median of runs)", "value");
  std::printf("%-58s %14.0f\n",
              absl::StrCat("int x, N=", int_steps,
                           ", BLOCK: iterations received per second")
                  .c_str(),
              Median(rates));
  std::printf("%-58s %14.3f\n",
              absl::StrCat("tensor x [1,4,64,64] FP32, N=", tensor_steps,
                           ": payload GB/s")
                  .c_str(),
              stream / 1e9);
  std::printf("%-58s %14.3f\n", "raw loopback TCP, same bytes: GB/s",
              tcp / 1e9);
  std::printf("%-58s %13.1f%%\n",
              "tensor stream / raw loopback (median of paired runs)",
              100.0 * Median(ratios));
  (*server)->Shutdown(absl::Seconds(1));
  return 0;
}

}  // namespace
}  // namespace loopserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  loopserve::TuneMallocForStreaming();  // as loopserve and loopctl do
  return loopserve::Main();
}
