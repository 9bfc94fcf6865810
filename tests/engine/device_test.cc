#include "engine/device.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <torch/version.h>

#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::HasSubstr;

// Whether a shared library of that file name is mapped into this process.
bool IsLoaded(const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (absl::EndsWith(line, "/" + name)) return true;
  }
  return false;
}

TEST(ResolveDeviceTest, Cpu) {
  ASSERT_OK_AND_ASSIGN(c10::Device device, ResolveDevice("cpu"));
  EXPECT_EQ(device, c10::Device(c10::kCPU));
}

TEST(ResolveDeviceTest, AutoIsCpuWithoutCuda) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "this machine has a GPU";
  ASSERT_OK_AND_ASSIGN(c10::Device device, ResolveDevice("auto"));
  EXPECT_EQ(device, c10::Device(c10::kCPU));
  EXPECT_THAT(ResolveDevice("cuda:0"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("--device=cuda:0: this machine has 0 CUDA "
                                 "device(s)")));
}

TEST(ResolveDeviceTest, RefusesOtherNames) {
  EXPECT_THAT(ResolveDevice("tpu"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("expected auto, cpu, cuda or cuda:N")));
  EXPECT_THAT(ResolveDevice("cuda:x"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("bad CUDA device index")));
}

TEST(ResolveDeviceTest, AutoPicksTheFirstGpu_CUDA) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  ASSERT_OK_AND_ASSIGN(c10::Device device, ResolveDevice("auto"));
  EXPECT_EQ(device, c10::Device(c10::kCUDA, 0));
  // The backend it loaded runs kernels there.
  EXPECT_TRUE(at::hasCUDA());
  EXPECT_EQ(at::ones({2}, at::Device(c10::kCUDA, 0)).sum().item<float>(), 2);
}

#ifdef LOOPSERVE_WITH_CUDA
// Note [the CUDA backend, loaded when wanted]: nothing loads it before a
// CUDA device is resolved, and once loaded, with or without a GPU, ATen has
// its CUDA kernels and the threads of this process may still ask for small
// stacks (civetweb's, for /metrics, ask for 100 KB).
TEST(LoadCudaBackendTest, RegistersCudaAndLeavesThreadStacksAlone) {
  EXPECT_FALSE(IsLoaded("libtorch_cuda.so"));
  ASSERT_OK(LoadCudaBackend());
  EXPECT_TRUE(IsLoaded("libtorch_cuda.so"));
  EXPECT_TRUE(at::detail::getCUDAHooks().hasCUDART());
  EXPECT_EQ(at::hasCUDA(), CudaDeviceCount() > 0);
  EXPECT_OK(LoadCudaBackend());  // once

  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setstacksize(&attributes, 100 * 1024);
  pthread_t thread;
  const int created = pthread_create(
      &thread, &attributes, [](void*) -> void* { return nullptr; }, nullptr);
  pthread_attr_destroy(&attributes);
  ASSERT_EQ(created, 0) << "a thread with a 100 KB stack: "
                        << std::strerror(created);
  pthread_join(thread, nullptr);
}
#endif

TEST(SetIntraOpThreadsTest, SetsThreadsPerOpOrRefusesANegativeCount) {
  ASSERT_OK(SetIntraOpThreads(1));
  EXPECT_EQ(at::get_num_threads(), 1);
  // A thread started afterwards runs its ops with as many.
  int in_thread = 0;
  std::thread([&] {
    at::parallel_for(0, 1 << 20, 1, [&](int64_t, int64_t) {});
    in_thread = at::get_num_threads();
  }).join();
  EXPECT_EQ(in_thread, 1);
  ASSERT_OK(SetIntraOpThreads(0));
  EXPECT_EQ(at::get_num_threads(), at::intraop_default_num_threads());
  EXPECT_THAT(SetIntraOpThreads(-1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--intra_op_threads must be >= 0")));
}

TEST(LibtorchDescriptionTest, NamesTheVersionAndCuda) {
  const std::string description = LibtorchDescription();
  EXPECT_THAT(description, HasSubstr("libtorch " TORCH_VERSION));
#ifdef LOOPSERVE_WITH_CUDA
  EXPECT_THAT(description, HasSubstr("compiled in"));
#else
  EXPECT_THAT(description, HasSubstr("no CUDA"));
#endif
}

}  // namespace
}  // namespace loopserve
