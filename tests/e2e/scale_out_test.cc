// Scale-out: three loopserve processes on loopback behind one LoopClient
// with the round_robin policy, as replicas behind a headless Service are.
// Each server's /metrics says how many runs it served; one server stopped
// mid-test ends its own runs with UNAVAILABLE and nothing else.
//
// $LOOPSERVE is the server binary.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/loop_client.h"
#include "tests/testing/eventually.h"
#include "tests/testing/metrics_text.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::Eventually;
using ::loopserve::testing::MetricValue;

// A port nobody listens on now (the kernel's pick, then released).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return 0;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// GET http://127.0.0.1:port/metrics; empty on failure.
std::string Scrape(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, request.data(), request.size()) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[65536];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
        response.append(buffer, n);
      }
    }
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// One loopserve process.
class ServerProcess {
 public:
  // Starts it and waits for its ready line; nullptr on failure.
  static std::unique_ptr<ServerProcess> Start() {
    auto server = std::unique_ptr<ServerProcess>(new ServerProcess());
    server->metrics_port_ = FreePort();
    const char* binary = std::getenv("LOOPSERVE");
    if (binary == nullptr) return nullptr;
    int err[2];
    if (pipe(err) != 0) return nullptr;
    std::vector<std::string> args = {
        binary,
        "--host=127.0.0.1",
        "--port=0",
        "--http_port=0",
        absl::StrCat("--metrics_port=", server->metrics_port_),
        "--max_iterations=2000000000000",
        "--shutdown_grace_s=0"};
    server->pid_ = fork();
    if (server->pid_ == 0) {
      dup2(err[1], STDERR_FILENO);
      close(err[0]);
      close(err[1]);
      std::vector<char*> argv;
      for (std::string& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(err[1]);
    server->stderr_ = fdopen(err[0], "r");
    // "loopserve: serving 8 pipelines on 127.0.0.1:PORT (device cpu), ..."
    char line[1024];
    while (fgets(line, sizeof(line), server->stderr_) != nullptr) {
      const std::string text(line);
      const size_t on = text.find(" on 127.0.0.1:");
      if (text.find("serving") != std::string::npos &&
          on != std::string::npos) {
        server->port_ = std::atoi(text.c_str() + on + 14);
        return server;
      }
    }
    return nullptr;  // it exited before serving
  }

  ~ServerProcess() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stderr_ != nullptr) fclose(stderr_);
  }

  // SIGTERM, then waits (bounded) for the exit; true when it exited 0.
  bool Stop() {
    kill(pid_, SIGTERM);
    const absl::Time end = absl::Now() + absl::Seconds(30);
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (absl::Now() > end) return false;
      absl::SleepFor(absl::Milliseconds(10));
    }
    exited_ = true;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

  int port() const { return port_; }
  double Metric(absl::string_view series) const {
    return MetricValue(Scrape(metrics_port_), series);
  }

 private:
  ServerProcess() = default;

  pid_t pid_ = 0;
  int port_ = 0;
  int metrics_port_ = 0;
  FILE* stderr_ = nullptr;
  bool exited_ = false;
};

constexpr char kSeedRunsOk[] =
    R"(loopserve_runs_total{code="OK",pipeline="seed-loop"})";
constexpr char kSeedActive[] = R"(loopserve_active_runs{pipeline="seed-loop"})";
constexpr char kWarmUpRunsOk[] =
    R"(loopserve_runs_total{code="OK",pipeline="seed-loop-2"})";

v1::RunRequest SeedRequest(int64_t num_steps) {
  v1::RunRequest request;
  request.set_pipeline("seed-loop");
  (*request.mutable_inputs())["num_steps"].set_int64_value(num_steps);
  (*request.mutable_inputs())["x"].set_int64_value(0);
  request.mutable_stream()->set_every(1'000'000);
  return request;
}

TEST(ScaleOutTest, RoundRobinSpreadsRunsAndOutlivesAStoppedServer) {
  std::vector<std::unique_ptr<ServerProcess>> servers;
  std::vector<std::string> addresses;
  for (int i = 0; i < 3; ++i) {
    servers.push_back(ServerProcess::Start());
    ASSERT_NE(servers.back(), nullptr) << "server " << i << " did not start";
    addresses.push_back(absl::StrCat("127.0.0.1:", servers.back()->port()));
  }
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<LoopClient> client,
      LoopClient::Connect(absl::StrCat("ipv4:", absl::StrJoin(addresses, ",")),
                          {.lb_policy = "round_robin"}));
  // Before counting, the channel reaches every server: warm-up runs of
  // another pipeline (counted apart) until each server has served one.
  ASSERT_OK(client->ListPipelines().status());
  ASSERT_TRUE(Eventually([&] {
    v1::RunRequest warm_up = SeedRequest(1);
    warm_up.set_pipeline("seed-loop-2");
    if (!client->Run(warm_up, {}, {.timeout = absl::Seconds(30)}).ok()) {
      return false;
    }
    for (const auto& server : servers) {
      if (server->Metric(kWarmUpRunsOk) < 1) return false;
    }
    return true;
  })) << "the channel did not reach every server";

  // 1. Thirty runs, one at a time: every server takes its turn.
  const RunCallOptions bounded{.timeout = absl::Seconds(30)};
  for (int run = 0; run < 30; ++run) {
    ASSERT_OK_AND_ASSIGN(v1::RunResult result,
                         client->Run(SeedRequest(3), {}, bounded));
    ASSERT_EQ(result.outputs().at("x").int64_value(), 3);
  }
  // A call is counted once gRPC is done with it, a moment after its client
  // has its status.
  std::vector<double> served;
  Eventually([&] {
    served.clear();
    for (const auto& server : servers) {
      served.push_back(server->Metric(kSeedRunsOk));
    }
    return served[0] + served[1] + served[2] == 30;
  });
  std::printf("30 runs over 3 servers: %g / %g / %g\n", served[0], served[1],
              served[2]);
  EXPECT_EQ(served[0] + served[1] + served[2], 30);
  for (double count : served) EXPECT_GE(count, 5);

  // 2. Six endless runs in flight, two per server; server 1 stops.
  constexpr int kLong = 6;
  std::vector<RunCancellation> cancellations(kLong);
  std::atomic<int> started{0};
  absl::Mutex mu;
  std::vector<absl::Status> ends(kLong);
  std::atomic<int> unavailable{0};
  std::vector<std::thread> runs;
  // However the test ends, nothing is left running.
  absl::Cleanup join = [&] {
    for (RunCancellation& cancellation : cancellations) cancellation.Cancel();
    for (std::thread& run : runs) {
      if (run.joinable()) run.join();
    }
  };
  for (int i = 0; i < kLong; ++i) {
    runs.emplace_back([&, i] {
      absl::Status status =
          client
              ->Run(SeedRequest(int64_t{1} << 40),
                    {.on_started = [&](const v1::RunStarted&) { ++started; }},
                    {.timeout = absl::Seconds(60),
                     .cancellation = &cancellations[i]})
              .status();
      if (status.code() == absl::StatusCode::kUnavailable) ++unavailable;
      absl::MutexLock lock(&mu);
      ends[i] = status;
    });
  }
  ASSERT_TRUE(Eventually([&] { return started == kLong; }));
  const double on_stopped = servers[1]->Metric(kSeedActive);
  std::printf("runs in flight: %g / %g / %g\n", servers[0]->Metric(kSeedActive),
              on_stopped, servers[2]->Metric(kSeedActive));
  EXPECT_GE(on_stopped, 1);
  EXPECT_TRUE(servers[1]->Stop());
  ASSERT_TRUE(Eventually([&] { return unavailable == on_stopped; }));

  // New runs go to the other two.
  const double before = served[0] + served[2];
  for (int run = 0; run < 12; ++run) {
    ASSERT_OK(client->Run(SeedRequest(3), {}, bounded).status());
  }
  double after = 0;
  Eventually([&] {
    after = servers[0]->Metric(kSeedRunsOk) + servers[2]->Metric(kSeedRunsOk);
    return after - before == 12;
  });
  EXPECT_EQ(after - before, 12);

  // The survivors' runs were untouched: they end only when cancelled.
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(unavailable, on_stopped);
  std::move(join).Invoke();
  int cancelled = 0;
  for (const absl::Status& status : ends) {
    EXPECT_TRUE(status.code() == absl::StatusCode::kUnavailable ||
                status.code() == absl::StatusCode::kCancelled)
        << status;
    cancelled += status.code() == absl::StatusCode::kCancelled;
  }
  EXPECT_EQ(cancelled, kLong - on_stopped);
  EXPECT_TRUE(servers[0]->Stop());
  EXPECT_TRUE(servers[2]->Stop());
}

}  // namespace
}  // namespace loopserve
