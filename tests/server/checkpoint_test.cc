// Checkpoints through the whole server (engine/checkpoint.h): for every
// sampler and the seed loops, a run resumed from the checkpoint of any
// iteration streams and returns exactly what the uninterrupted run did;
// forks change what a fork may change; tampered, foreign and mismatched
// checkpoints are refused with the codes the API promises.
#include "engine/checkpoint.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "app/default_pipelines.h"
#include "client/loop_client.h"
#include "engine/digest.h"
#include "engine/state_codec.h"
#include "loopserve/v1/checkpoint.pb.h"
#include "server/loop_server.h"
#include "tests/testing/status_matchers.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// LCM is in no default pipeline (it serves LCM-distilled models); the
// mixture's exact noise predictor runs it all the same.
constexpr char kLcmConfig[] = R"config(
  components { name: "gmm" type: "gaussian_mixture_denoiser"
    params { key: "weights" value { list_value { values { double_value: 0.3 } values { double_value: 0.7 } } } }
    params { key: "means" value { list_value { values { double_value: -2 } values { double_value: 1 } } } }
    params { key: "stds" value { list_value { values { double_value: 0.3 } values { double_value: 0.5 } } } }
  }
  components { name: "lcm" type: "lcm_scheduler" }
  pipelines {
    name: "gmm-lcm"
    components { key: "scheduler" value: "lcm" }
    components { key: "denoiser" value: "gmm" }
    blocks {
      type: "Sequential"
      blocks { name: "set_timesteps" type: "SetTimesteps" }
      blocks { name: "prepare_latents" type: "PrepareLatents" }
      blocks {
        name: "denoise"
        type: "DenoiseLoop"
        blocks { name: "before_denoiser" type: "ScaleModelInput" }
        blocks { name: "denoiser" type: "PredictNoise" }
        blocks { name: "after_denoiser" type: "SchedulerStep" }
      }
    }
  }
)config";

// A run as its client saw it.
struct Seen {
  v1::RunStarted started;
  std::vector<v1::Iteration> iterations;
  v1::RunResult result;
};

// What must match bit for bit: an iteration's index and values, a result's
// outputs.
std::string Content(const v1::Iteration& it) {
  v1::Iteration copy = it;
  copy.clear_checkpoint();
  copy.clear_dropped_before();
  return DeterministicBytes(copy);
}
std::string Content(const v1::RunResult& result) {
  v1::RunResult copy = result;
  copy.clear_stats();
  return DeterministicBytes(copy);
}

class CheckpointTest : public ::testing::Test {
 protected:
  static absl::StatusOr<PipelineCatalog> Catalog() {
    ASSIGN_OR_RETURN(PipelineCatalog catalog, LoadDefaultPipelines(c10::kCPU));
    BlockRegistry blocks;
    ComponentRegistry components;
    RETURN_IF_ERROR(RegisterTypes({}, blocks, components));
    RETURN_IF_ERROR(LoadServerConfig({.text = kLcmConfig, .source = "lcm"},
                                     blocks, components, c10::kCPU, catalog));
    return catalog;
  }

  // A server with checkpoint key `key`, and a client of it.
  struct Server {
    std::unique_ptr<LoopServer> server;
    std::unique_ptr<LoopClient> client;
  };
  static Server Start(const std::string& key) {
    Server out;
    LoopServerOptions options;
    options.address = "127.0.0.1:0";
    absl::StatusOr<CheckpointKey> checkpoint_key =
        CheckpointKey::FromBytes(key);
    EXPECT_OK(checkpoint_key.status());
    options.engine.checkpoint_key = *checkpoint_key;
    absl::StatusOr<PipelineCatalog> catalog = Catalog();
    EXPECT_OK(catalog.status());
    absl::StatusOr<std::unique_ptr<LoopServer>> server =
        LoopServer::Start(options, *std::move(catalog));
    EXPECT_OK(server.status());
    out.server = *std::move(server);
    absl::StatusOr<std::unique_ptr<LoopClient>> client =
        LoopClient::Connect(absl::StrCat("127.0.0.1:", out.server->port()));
    EXPECT_OK(client.status());
    out.client = *std::move(client);
    return out;
  }

  void SetUp() override { a_ = Start(kKey); }
  void TearDown() override {
    for (Server* s : {&a_, &b_}) {
      if (s->server != nullptr) s->server->Shutdown(absl::Seconds(5));
    }
  }

  static absl::StatusOr<Seen> RunOn(LoopClient& client,
                                    const v1::RunRequest& request) {
    Seen seen;
    ASSIGN_OR_RETURN(seen.result,
                     client.Run(request, {.on_started =
                                              [&seen](const v1::RunStarted& s) {
                                                seen.started = s;
                                              },
                                          .on_iteration =
                                              [&seen](const v1::Iteration& it) {
                                                seen.iterations.push_back(it);
                                              }}));
    return seen;
  }

  static v1::RunRequest Request(const std::string& pipeline,
                                std::map<std::string, v1::Value> inputs) {
    v1::RunRequest request;
    request.set_pipeline(pipeline);
    for (auto& [name, value] : inputs)
      (*request.mutable_inputs())[name] = value;
    request.mutable_stream()->set_checkpoints(true);
    return request;
  }

  static v1::RunRequest Resume(const std::string& checkpoint,
                               std::map<std::string, v1::Value> inputs = {}) {
    v1::RunRequest request = Request("", std::move(inputs));
    request.set_resume_from(checkpoint);
    return request;
  }

  // The uninterrupted run of `request`, then, for checkpoints taken after
  // several iterations, runs resumed from them on `resume_on`: each must
  // stream the rest of the iterations and the result bit for bit.
  void ExpectResumesExactly(const v1::RunRequest& request,
                            LoopClient& resume_on) {
    ASSERT_OK_AND_ASSIGN(Seen whole, RunOn(*a_.client, request));
    const int64_t n = static_cast<int64_t>(whole.iterations.size());
    ASSERT_GE(n, 3);
    for (int64_t k : {int64_t{0}, n / 2, n - 1}) {
      SCOPED_TRACE(absl::StrCat(request.pipeline(), " resumed after ", k));
      const v1::Iteration& at = whole.iterations[k];
      ASSERT_FALSE(at.checkpoint().empty());
      ASSERT_OK_AND_ASSIGN(Seen rest,
                           RunOn(resume_on, Resume(at.checkpoint())));
      EXPECT_EQ(rest.started.first_iteration(), at.index() + 1);
      EXPECT_EQ(rest.started.resumed_loop(), at.loop());
      ASSERT_EQ(rest.iterations.size(), static_cast<size_t>(n - 1 - k));
      for (size_t j = 0; j < rest.iterations.size(); ++j) {
        EXPECT_TRUE(Content(rest.iterations[j]) ==
                    Content(whole.iterations[k + 1 + j]))
            << "iteration " << whole.iterations[k + 1 + j].index()
            << " differs";
      }
      EXPECT_TRUE(Content(rest.result) == Content(whole.result))
          << "the result differs";
      EXPECT_EQ(rest.result.stats().iterations(), n - 1 - k);
    }
  }

  static v1::Value Int(int64_t v) {
    v1::Value value;
    value.set_int64_value(v);
    return value;
  }
  static v1::Value Double(double v) {
    v1::Value value;
    value.set_double_value(v);
    return value;
  }
  static v1::Value String(std::string v) {
    v1::Value value;
    value.set_string_value(std::move(v));
    return value;
  }

  static constexpr char kKey[] = "0123456789abcdef0123456789abcdef";
  Server a_;
  Server b_;
};

TEST_F(CheckpointTest, EverySamplerResumesBitForBit) {
  for (const char* sampler :
       {"ddim", "euler", "euler-karras", "euler-a", "dpmpp-2m",
        "dpmpp-2m-karras", "dpmpp-2m-sde-karras", "dpmpp-3m", "unipc",
        "unipc-3"}) {
    SCOPED_TRACE(sampler);
    ExpectResumesExactly(Request("gmm-ddim", {{"scheduler", String(sampler)},
                                              {"num_inference_steps", Int(8)},
                                              {"batch_size", Int(2)},
                                              {"seed", Int(7)}}),
                         *a_.client);
  }
  // DDIM with eta draws noise at every step from the run's generator.
  ExpectResumesExactly(Request("gmm-ddim", {{"eta", Double(1.0)},
                                            {"num_inference_steps", Int(6)}}),
                       *a_.client);
  for (const char* sampler : {"flow-euler", "flow-euler-dynamic"}) {
    SCOPED_TRACE(sampler);
    ExpectResumesExactly(Request("gmm-flow", {{"scheduler", String(sampler)},
                                              {"num_inference_steps", Int(6)}}),
                         *a_.client);
  }
  ExpectResumesExactly(Request("gmm-lcm", {{"num_inference_steps", Int(4)}}),
                       *a_.client);
}

TEST_F(CheckpointTest, TheDigitsModelAndTheSeedLoopsResumeBitForBit) {
  ExpectResumesExactly(
      Request("digits-text", {{"prompt", String("seven")},
                              {"scheduler", String("dpmpp-2m-sde-karras")},
                              {"num_inference_steps", Int(6)}}),
      *a_.client);
  for (const char* pipeline : {"seed-loop", "seed-loop-2"}) {
    ExpectResumesExactly(
        Request(pipeline, {{"num_steps", Int(5)}, {"x", Int(0)}}), *a_.client);
  }
}

TEST_F(CheckpointTest, ASecondServerWithTheSameKeyResumesBitForBit) {
  b_ = Start(kKey);
  ExpectResumesExactly(Request("gmm-ddim", {{"scheduler", String("euler-a")},
                                            {"num_inference_steps", Int(6)}}),
                       *b_.client);
}

TEST_F(CheckpointTest, AForkChangesWhatTheLoopReadsAndOnlyAfterItsStep) {
  ASSERT_OK_AND_ASSIGN(
      Seen whole,
      RunOn(*a_.client, Request("digits-text", {{"prompt", String("three")},
                                                {"num_inference_steps", Int(8)},
                                                {"seed", Int(3)}})));
  const v1::Iteration& at = whole.iterations[3];
  // Another guidance scale: read by the loop at every step.
  ASSERT_OK_AND_ASSIGN(
      Seen fork, RunOn(*a_.client, Resume(at.checkpoint(),
                                          {{"guidance_scale", Double(7.0)}})));
  ASSERT_EQ(fork.iterations.size(), 4u);
  EXPECT_EQ(fork.iterations[0].index(), 4);
  EXPECT_FALSE(Content(fork.iterations[0]) == Content(whole.iterations[4]));
  EXPECT_FALSE(Content(fork.result) == Content(whole.result));
  EXPECT_EQ(fork.started.resolved_inputs().at("prompt").string_value(),
            "three");
  // Another prompt: its encoder runs again; the latents carry on.
  ASSERT_OK_AND_ASSIGN(
      Seen other, RunOn(*a_.client, Resume(at.checkpoint(),
                                           {{"prompt", String("eight")}})));
  ASSERT_EQ(other.iterations.size(), 4u);
  EXPECT_FALSE(Content(other.result) == Content(whole.result));
  // The same value given again is no fork at all.
  ASSERT_OK_AND_ASSIGN(
      Seen same,
      RunOn(*a_.client, Resume(at.checkpoint(), {{"seed", Int(3)}})));
  EXPECT_TRUE(Content(same.result) == Content(whole.result));
}

TEST_F(CheckpointTest, RefusesWhatCannotResume) {
  ASSERT_OK_AND_ASSIGN(
      Seen whole,
      RunOn(*a_.client, Request("gmm-ddim", {{"num_inference_steps", Int(5)},
                                             {"seed", Int(1)}})));
  const std::string checkpoint = whole.iterations[1].checkpoint();

  std::string flipped = checkpoint;
  flipped[flipped.size() / 2] ^= 0x01;
  EXPECT_THAT(
      a_.client->Run(Resume(flipped), {}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("resume_from")));
  EXPECT_THAT(
      a_.client->Run(Resume("not a checkpoint"), {}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("resume_from")));

  v1::RunRequest other = Resume(checkpoint);
  other.set_pipeline("gmm-euler");
  EXPECT_THAT(a_.client->Run(other, {}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("the checkpoint is of pipeline 'gmm-ddim'")));

  EXPECT_THAT(a_.client->Run(Resume(checkpoint, {{"seed", Int(2)}}), {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("resuming changes 'seed'"),
                             HasSubstr("prepare_latents"))));
  EXPECT_THAT(
      a_.client->Run(Resume(checkpoint, {{"num_inference_steps", Int(9)}}), {}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("resuming changes 'num_inference_steps'")));

  // Another deployment's key.
  b_ = Start("another key, as long as it must be");
  EXPECT_THAT(b_.client->Run(Resume(checkpoint), {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--checkpoint_key_file")));

  // The server is unharmed: the checkpoint still resumes.
  EXPECT_OK(a_.client->Run(Resume(checkpoint), {}).status());
}

// Note [a checkpoint is a request too]: with the key (leaked), anything
// can be signed; what a checkpoint holds is checked as a request is.
TEST_F(CheckpointTest, AForgedCheckpointIsCheckedAsARequestIs) {
  ASSERT_OK_AND_ASSIGN(
      Seen whole,
      RunOn(*a_.client, Request("gmm-ddim", {{"num_inference_steps", Int(5)},
                                             {"seed", Int(1)}})));
  ASSERT_OK_AND_ASSIGN(const CheckpointKey key, CheckpointKey::FromBytes(kKey));
  ASSERT_OK_AND_ASSIGN(const v1::Checkpoint real,
                       key.Open(whole.iterations[1].checkpoint()));
  const auto forged = [&](const std::function<void(v1::Checkpoint&)>& edit) {
    v1::Checkpoint checkpoint = real;
    edit(checkpoint);
    return Resume(key.Sign(checkpoint.SerializeAsString()));
  };

  EXPECT_THAT(a_.client->Run(forged([](v1::Checkpoint& c) {
                               c.set_iteration(1'000'000'000);
                             }),
                             {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("the checkpoint's iteration 1000000000 is "
                                 "past the loop's last (input "
                                 "'num_inference_steps' is 5)")));
  EXPECT_THAT(
      a_.client->Run(forged([](v1::Checkpoint& c) {
                       (*c.mutable_inputs())["bogus"].set_int64_value(1);
                     }),
                     {}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("the checkpoint's run is not one this "
                               "server takes"),
                     HasSubstr("input 'bogus': unknown input"))));
  EXPECT_THAT(
      a_.client->Run(forged([](v1::Checkpoint& c) {
                       (*c.mutable_inputs())["eta"].set_double_value(1e308);
                     }),
                     {}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("input 'eta': must be in [0, 1]")));
  EXPECT_THAT(
      a_.client->Run(forged([](v1::Checkpoint& c) {
                       v1::StateValue& latents =
                           (*c.mutable_carried())["latents"];
                       ASSERT_OK(EncodeStateValue(
                           at::full({1, 4, 64, 64}, std::nan("")), latents));
                     }),
                     {}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("value 'latents'"), HasSubstr("NaN or Inf"))));
  // The real one still resumes.
  EXPECT_OK(
      a_.client->Run(Resume(whole.iterations[1].checkpoint()), {}).status());
}

TEST_F(CheckpointTest, AnotherConfigurationOfThePipelineIsAFailedPrecondition) {
  ASSERT_OK_AND_ASSIGN(
      Seen whole,
      RunOn(*a_.client, Request("gmm-lcm", {{"num_inference_steps", Int(4)}})));
  // The same name, another mixture: the same key signs, the fingerprint
  // differs.
  std::string changed = kLcmConfig;
  changed.replace(changed.find("0.3 }"), 5, "0.4 }");
  changed.replace(changed.find("0.7 }"), 5, "0.6 }");
  BlockRegistry blocks;
  ComponentRegistry components;
  ASSERT_OK(RegisterTypes({}, blocks, components));
  PipelineCatalog catalog;
  ASSERT_OK(LoadServerConfig({.text = changed, .source = "changed"}, blocks,
                             components, c10::kCPU, catalog));
  LoopServerOptions options;
  options.address = "127.0.0.1:0";
  ASSERT_OK_AND_ASSIGN(options.engine.checkpoint_key,
                       CheckpointKey::FromBytes(kKey));
  ASSERT_OK_AND_ASSIGN(b_.server,
                       LoopServer::Start(options, std::move(catalog)));
  ASSERT_OK_AND_ASSIGN(b_.client, LoopClient::Connect(absl::StrCat(
                                      "127.0.0.1:", b_.server->port())));
  EXPECT_THAT(b_.client->Run(Resume(whole.iterations[0].checkpoint()), {}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("another configuration")));
}

TEST_F(CheckpointTest, ACheckpointCarriesTheLoopsStateAndNotItsCaches) {
  ASSERT_OK_AND_ASSIGN(
      Seen whole,
      RunOn(*a_.client,
            Request("digits-text", {{"prompt", String("one")},
                                    {"scheduler", String("unipc")},
                                    {"num_inference_steps", Int(4)}})));
  v1::SignedCheckpoint signed_checkpoint;
  ASSERT_TRUE(
      signed_checkpoint.ParseFromString(whole.iterations[2].checkpoint()));
  EXPECT_EQ(signed_checkpoint.version(), 1u);
  v1::Checkpoint checkpoint;
  ASSERT_TRUE(checkpoint.ParseFromString(signed_checkpoint.checkpoint()));
  EXPECT_EQ(checkpoint.pipeline(), "digits-text");
  EXPECT_EQ(checkpoint.loop(), "digits-text/denoise");
  EXPECT_EQ(checkpoint.iteration(), 2);
  EXPECT_EQ(checkpoint.total(), 4);
  EXPECT_EQ(checkpoint.device_type(), "cpu");
  EXPECT_EQ(checkpoint.inputs().at("prompt").string_value(), "one");
  EXPECT_TRUE(checkpoint.inputs().contains("seed"));  // resolved
  EXPECT_TRUE(checkpoint.carried().contains("latents"));
  EXPECT_FALSE(checkpoint.intermediates().contains("latents"));
  EXPECT_TRUE(checkpoint.intermediates().at("generator").has_cpu_generator());
  const v1::ComponentState& schedule =
      checkpoint.intermediates().at("schedule").component_state();
  EXPECT_EQ(schedule.role(), "scheduler");
  EXPECT_EQ(schedule.choice(), "unipc");
  EXPECT_GT(schedule.saved()
                .dict()
                .entries()
                .at("model_outputs")
                .list()
                .values_size(),
            0);
  for (const auto& [name, value] : checkpoint.carried()) {
    EXPECT_EQ(name.find('#'), std::string::npos) << name << " is a cache";
  }
}

}  // namespace
}  // namespace loopserve
