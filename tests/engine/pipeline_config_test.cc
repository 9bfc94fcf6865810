// Loading pipelines from configuration: a good file, and every kind of bad
// one, each refused with the file, line and field named.
#include "engine/pipeline_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "app/default_pipelines.h"
#include "blocks/builtin_blocks.h"
#include "blocks/diffusion/schedulers.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::HasSubstr;

// A small valid configuration; tests break one thing at a time.
constexpr char kGood[] = R"config(components {
  name: "ddim"
  type: "ddim_scheduler"
  params { key: "clip_sample" value { bool_value: false } }
}
components {
  name: "gmm"
  type: "gaussian_mixture_denoiser"
  params { key: "weights" value { list_value { values { double_value: 1 } } } }
  params { key: "means" value { list_value { values { double_value: 0 } } } }
  params { key: "stds" value { list_value { values { double_value: 1 } } } }
}
pipelines {
  name: "p"
  components { key: "scheduler" value: "ddim" }
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

class PipelineConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(RegisterBuiltinBlocks(blocks_));
    ASSERT_OK(RegisterBuiltinComponents(components_));
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_);
  }

  absl::Status Load(const std::string& text) {
    catalog_ = PipelineCatalog();
    return LoadServerConfig(
        {.text = text, .source = "cfg.pbtxt", .base_dir = dir_.string()},
        blocks_, components_, c10::kCPU, catalog_);
  }

  // kGood with `from` replaced by `to` (once).
  static std::string Good(const std::string& from, const std::string& to) {
    std::string text = kGood;
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    return text;
  }

  void WriteFile(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }

  BlockRegistry blocks_;
  ComponentRegistry components_;
  PipelineCatalog catalog_;
  std::filesystem::path dir_;
};

// Runs kGood's pipeline `p` (3 steps) to its [1,4,64,64] latents.
void ExpectRunsToLatents(const Pipeline& p) {
  PipelineState state;
  state.SetInput("num_inference_steps", int64_t{3});
  state.SetInput("seed", int64_t{1});
  RunContext context;
  ASSERT_OK(RunBlock(*p.root, p.components, state, context));
  EXPECT_EQ(state.GetIntermediate("latents")->toTensor().sizes(),
            (std::vector<int64_t>{1, 4, 64, 64}));
}

TEST_F(PipelineConfigTest, AGoodConfigurationLoadsAndRuns) {
  ASSERT_OK(Load(kGood));
  const Pipeline* p = catalog_.Find("p");
  ASSERT_NE(p, nullptr);
  EXPECT_THAT(p->components.Names(),
              ::testing::ElementsAre("denoiser", "scheduler"));
  ExpectRunsToLatents(*p);
}

TEST_F(PipelineConfigTest, TheEmbeddedDefaultLoads) {
  ASSERT_OK_AND_ASSIGN(PipelineCatalog catalog,
                       LoadDefaultPipelines(c10::kCPU));
  std::vector<std::string> names;
  for (const auto& p : catalog.pipelines()) names.push_back(p->name);
  EXPECT_THAT(names,
              ::testing::ElementsAre("seed-loop", "seed-loop-2", "gmm-ddim",
                                     "gmm-euler", "gmm-flow", "digits-ddim",
                                     "digits-text", "digits-img2img"));
  EXPECT_THAT(catalog.notes(), ::testing::IsEmpty());
}

TEST_F(PipelineConfigTest, SyntaxErrorsNameLineAndColumn) {
  EXPECT_THAT(Load("components {\n  name: \"x\"\n  tipe: \"y\"\n}\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cfg.pbtxt:3:7: Message type "
                                 "\"loopserve.v1.ComponentConfig\" has no "
                                 "field named \"tipe\"")));
}

TEST_F(PipelineConfigTest, UnknownBlockTypeNamesItsPath) {
  EXPECT_THAT(Load(Good("type: \"PredictNoise\"", "type: \"PredictNoize\"")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cfg.pbtxt:25:7: pipeline 'p', block "
                                 "'denoise/denoiser': unknown block type "
                                 "'PredictNoize'; registered: ")));
}

TEST_F(PipelineConfigTest, UnknownComponentType) {
  EXPECT_THAT(Load(Good("type: \"ddim_scheduler\"", "type: \"dpm\"")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cfg.pbtxt:1:1: component 'ddim' (dpm): "
                                 "unknown component type 'dpm'")));
}

TEST_F(PipelineConfigTest, BadAndUnknownParams) {
  EXPECT_THAT(
      Load(Good("key: \"clip_sample\" value { bool_value: false }",
                "key: \"beta_schedule\" value { string_value: \"cosine\" }")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("cfg.pbtxt:1:1: component 'ddim' (ddim_scheduler): "
                         "param 'beta_schedule': must be one of linear, "
                         "scaled_linear; got 'cosine'")));
  EXPECT_THAT(
      Load(Good("key: \"clip_sample\"", "key: \"clip_sampel\"")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("param 'clip_sampel': unknown param; known: ")));
  EXPECT_THAT(
      Load(Good("blocks { name: \"set_timesteps\" type: \"SetTimesteps\" }",
                "blocks { name: \"set_timesteps\" type: \"SetTimesteps\" "
                "params { key: \"num_inference_steps\" value { "
                "string_value: \"ten\" } } }")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("cfg.pbtxt:19:5: pipeline 'p', block "
                         "'set_timesteps': param 'num_inference_steps': "
                         "expected an integer, got string")));
}

// A role bound to a component of the wrong kind fails where it is bound,
// naming the block, the interface it expects and what it got; so does a
// preview role a block needs as a decoder.
TEST_F(PipelineConfigTest, WronglyTypedRolesFailWhereTheyAreBound) {
  EXPECT_THAT(
      Load(Good("key: \"scheduler\" value: \"ddim\"",
                "key: \"scheduler\" value: \"gmm\"")),
      StatusIs(
          absl::StatusCode::kInvalidArgument,
          HasSubstr("cfg.pbtxt:15:3: pipeline 'p', role 'scheduler': "
                    "block 'p/set_timesteps' (SetTimesteps) expects "
                    "component 'scheduler' to be a Scheduler "
                    "(ddim_scheduler | ddpm_scheduler | euler_scheduler | ")));
  EXPECT_THAT(Load(Good("key: \"scheduler\" value: \"ddim\"",
                        "key: \"scheduler\" value: \"gmm\"")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("but it is a Denoiser (component 'gmm', "
                                 "gaussian_mixture_denoiser)")));
  EXPECT_THAT(
      Load(Good("key: \"denoiser\" value: \"gmm\"",
                "key: \"denoiser\" value: \"ddim\"")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("cfg.pbtxt:16:3: pipeline 'p', role 'denoiser': "
                         "block 'p/denoise/denoiser' (PredictNoise) expects "
                         "component 'denoiser' to be a Denoiser")));
}

// The "preview" role serves streamed previews only when it is bound to an
// IterationPreview; the pipeline says so, rather than advertising previews
// it would refuse.
TEST_F(PipelineConfigTest, PreviewIsAdvertisedOnlyForAnIterationPreview) {
  ASSERT_OK(Load(Good("  components { key: \"denoiser\" value: \"gmm\" }\n",
                      "  components { key: \"denoiser\" value: \"gmm\" }\n"
                      "  components { key: \"preview\" value: \"ddim\" }\n")));
  EXPECT_FALSE(catalog_.Find("p")->description_proto.preview());
  ASSERT_OK(
      Load(Good("  components { key: \"denoiser\" value: \"gmm\" }\n",
                "  components { key: \"denoiser\" value: \"gmm\" }\n"
                "  components { key: \"preview\" value: \"rgb\" }\n") +
           "components { name: \"rgb\" type: \"latent_preview\" params { "
           "key: \"factors\" value { list_value { values { double_value: "
           "1 } values { double_value: 1 } values { double_value: 1 } } } "
           "} }\n"));
  EXPECT_TRUE(catalog_.Find("p")->description_proto.preview());
}

TEST_F(PipelineConfigTest, MissingAndUndefinedComponents) {
  EXPECT_THAT(
      Load(Good("  components { key: \"scheduler\" value: \"ddim\" }\n", "")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("cfg.pbtxt:13:1: pipeline 'p', role 'scheduler': "
                         "block 'p/set_timesteps' (SetTimesteps) expects "
                         "component 'scheduler' (ddim_scheduler | "
                         "ddpm_scheduler | euler_scheduler | ")));
  EXPECT_THAT(Load(Good("value: \"gmm\"", "value: \"gnm\"")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cfg.pbtxt:16:3: pipeline 'p': role "
                                 "'denoiser' names component 'gnm', which is "
                                 "not defined")));
}

TEST_F(PipelineConfigTest, ALeafCannotHoldBlocks) {
  EXPECT_THAT(
      Load(Good("blocks { name: \"set_timesteps\" type: \"SetTimesteps\" }",
                "blocks { name: \"set_timesteps\" type: \"SetTimesteps\" "
                "blocks { name: \"x\" type: \"Decode\" } }")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("block type 'SetTimesteps' holds no blocks, but 1 "
                         "are given")));
}

// Note [default sub-blocks]: a DenoiseLoop lists what differs.
TEST_F(PipelineConfigTest,
       ADenoiseLoopHoldsItsStandardBlocksUnlessToldOtherwise) {
  auto loop_blocks = [](const Pipeline& p) {
    const Block& loop = *p.root->sub_blocks()[2].block;
    std::vector<std::string> names;
    for (const SubBlock& sub : loop.sub_blocks()) {
      names.push_back(absl::StrCat(sub.name, ":", sub.block->type_name()));
    }
    return names;
  };
  const std::string standard =
      R"config(      blocks { name: "before_denoiser" type: "ScaleModelInput" }
      blocks { name: "denoiser" type: "PredictNoise" }
      blocks { name: "after_denoiser" type: "SchedulerStep" }
)config";
  // None listed: the three, and the pipeline runs as kGood's does.
  ASSERT_OK(Load(Good(standard, "")));
  const Pipeline* p = catalog_.Find("p");
  ASSERT_NE(p, nullptr);
  EXPECT_THAT(loop_blocks(*p),
              ::testing::ElementsAre("before_denoiser:ScaleModelInput",
                                     "denoiser:PredictNoise",
                                     "after_denoiser:SchedulerStep"));
  ExpectRunsToLatents(*p);

  // One listed by a standard name takes that one's place, with its params;
  // another runs after the standard ones.
  ASSERT_OK(Load(Good(standard, R"config(
      blocks {
        name: "denoiser"
        type: "PredictNoise"
        params { key: "guidance_scale" value { double_value: 2 } }
      }
      blocks { name: "extra" type: "ScaleModelInput" }
)config")));
  p = catalog_.Find("p");
  ASSERT_NE(p, nullptr);
  EXPECT_THAT(loop_blocks(*p),
              ::testing::ElementsAre(
                  "before_denoiser:ScaleModelInput", "denoiser:PredictNoise",
                  "after_denoiser:SchedulerStep", "extra:ScaleModelInput"));
  const Block& denoiser =
      *p->root->sub_blocks()[2].block->sub_blocks()[1].block;
  bool found = false;
  for (const InputParam& input : denoiser.signature().inputs) {
    if (input.name != "guidance_scale") continue;
    found = true;
    EXPECT_EQ(input.default_value.toDouble(), 2);
  }
  EXPECT_TRUE(found);
}

TEST_F(PipelineConfigTest, ABlockListedBeforeAStandardOneIsRefused) {
  EXPECT_THAT(
      Load(Good(
          R"config(blocks { name: "denoiser" type: "PredictNoise" })config",
          R"config(blocks { name: "extra" type: "ScaleModelInput" }
      blocks { name: "denoiser" type: "PredictNoise" })config")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("block 'denoise': sub-block 'extra' is listed "
                         "before 'denoiser', one of DenoiseLoop's standard "
                         "sub-blocks")));
}

TEST_F(PipelineConfigTest, MissingModelFileIsNamed) {
  EXPECT_THAT(
      Load(Good("components {\n  name: \"gmm\"",
                "components {\n  name: \"model\"\n"
                "  type: \"torchscript_denoiser\"\n"
                "  params { key: \"path\" value { string_value: \"no.pt\" } }\n"
                "}\ncomponents {\n  name: \"gmm\"")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr(absl::StrCat("cfg.pbtxt:6:1: component 'model' "
                                      "(torchscript_denoiser): param 'path': "
                                      "cannot load TorchScript module '",
                                      dir_.string(), "/no.pt'"))));
}

// A diffusers scheduler_config.json is read as it is; params override it.
TEST_F(PipelineConfigTest, SchedulerConfigFile) {
  WriteFile("scheduler_config.json", R"({
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.30.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": false,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": false,
    "skip_prk_steps": true,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "trained_betas": null
  })");
  ASSERT_OK(Load(Good("key: \"clip_sample\" value { bool_value: false }",
                      "key: \"config_file\" value { string_value: "
                      "\"scheduler_config.json\" } } params { key: "
                      "\"timestep_spacing\" value { string_value: "
                      "\"leading\" }")));
  ASSERT_OK_AND_ASSIGN(
      const Scheduler* scheduler,
      catalog_.Find("p")->components.Get<Scheduler>("scheduler"));
  const SchedulerConfig& c = scheduler->config();
  EXPECT_EQ(c.noise.beta_schedule, "scaled_linear");
  EXPECT_DOUBLE_EQ(c.noise.beta_end, 0.012);
  EXPECT_EQ(c.prediction_type, "v_prediction");
  EXPECT_FALSE(c.set_alpha_to_one);
  EXPECT_FALSE(c.clip_sample);
  EXPECT_EQ(c.steps_offset, 1);
  EXPECT_EQ(c.timestep_spacing, "leading");  // the param wins over the file

  // PNDM's skip_prk_steps is another scheduler's key: unused, and noted.
  ASSERT_EQ(catalog_.notes().size(), 1u);
  EXPECT_THAT(catalog_.notes()[0],
              HasSubstr("cfg.pbtxt:1:1: component 'ddim' (ddim_scheduler): "
                        "config_file keys that DDIMScheduler does not use: "
                        "skip_prk_steps"));
}

// A scheduler_config.json as users have it: another class's keys are
// listed as unused; a key no diffusers scheduler knows is an error with a
// did-you-mean; a key loopserve implements only at its default must be at
// it.
TEST_F(PipelineConfigTest, SchedulerConfigFileKeys) {
  auto with_file = [&](const std::string& file) {
    return Load(Good("key: \"clip_sample\" value { bool_value: false }",
                     absl::StrCat("key: \"config_file\" value { "
                                  "string_value: \"",
                                  file, "\" }")));
  };
  WriteFile("euler.json", R"({"_class_name": "EulerDiscreteScheduler",
    "use_karras_sigmas": true, "set_alpha_to_one": false,
    "interpolation_type": "linear"})");
  ASSERT_OK(with_file("euler.json"));
  ASSERT_EQ(catalog_.notes().size(), 1u);
  EXPECT_THAT(catalog_.notes()[0],
              HasSubstr("DDIMScheduler does not use: interpolation_type, "
                        "use_karras_sigmas"));

  WriteFile("typo.json", R"({"clip_sampel": false})");
  EXPECT_THAT(with_file("typo.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("typo.json' has key 'clip_sampel', which no "
                                 "diffusers scheduler knows; did you mean "
                                 "'clip_sample'?")));
  WriteFile("threshold.json", R"({"thresholding": true})");
  EXPECT_THAT(with_file("threshold.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sets thresholding = true; loopserve's "
                                 "DDIMScheduler supports only false")));
}

// diffusers_scheduler serves the class a file's _class_name names, and
// names the classes it serves when it is another.
TEST_F(PipelineConfigTest, DiffusersSchedulerPicksTheClass) {
  auto as_diffusers = [&](const std::string& file) {
    return Load(
        Good("type: \"ddim_scheduler\"\n  params { key: "
             "\"clip_sample\" value { bool_value: false } }",
             absl::StrCat("type: \"diffusers_scheduler\"\n  params { "
                          "key: \"config_file\" value { "
                          "string_value: \"",
                          file, "\" } }")));
  };
  // As diffusers saves it: Python's json writes -Infinity bare.
  WriteFile("dpm.json", R"({"_class_name": "DPMSolverMultistepScheduler",
    "_diffusers_version": "0.27.0", "use_karras_sigmas": true,
    "lambda_min_clipped": -Infinity, "variance_type": null,
    "solver_order": 3, "skip_prk_steps": true})");
  ASSERT_OK(as_diffusers("dpm.json"));
  ASSERT_OK_AND_ASSIGN(
      const Scheduler* scheduler,
      catalog_.Find("p")->components.Get<Scheduler>("scheduler"));
  EXPECT_EQ(scheduler->type_name(), "dpm_solver_multistep_scheduler");
  EXPECT_TRUE(scheduler->config().use_karras_sigmas);
  EXPECT_EQ(scheduler->config().solver_order, 3);

  WriteFile("pndm.json", R"({"_class_name": "PNDMScheduler"})");
  EXPECT_THAT(as_diffusers("pndm.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("is a PNDMScheduler, which loopserve does "
                                 "not serve; it serves DDIMScheduler, ")));
}

// "a | b" binds a role to several components, the first the default: the
// pipeline's `scheduler` input lists them, and each must be of the kind the
// blocks expect.
TEST_F(PipelineConfigTest, RoleChoices) {
  const std::string euler =
      "components { name: \"euler\" type: \"euler_scheduler\" }\n";
  ASSERT_OK(
      Load(Good("value: \"ddim\" }", "value: \"euler | ddim\" }") + euler));
  const Pipeline* p = catalog_.Find("p");
  EXPECT_THAT(p->components.Choices("scheduler"),
              ::testing::ElementsAre("euler", "ddim"));
  const InputParam* input = nullptr;
  for (const InputParam& param : p->inputs) {
    if (param.name == "scheduler") input = &param;
  }
  ASSERT_NE(input, nullptr);
  EXPECT_THAT(input->choices, ::testing::ElementsAre("euler", "ddim"));
  EXPECT_EQ(input->default_value.toStringRef(), "euler");
  ASSERT_OK_AND_ASSIGN(const Scheduler* chosen,
                       p->components.Get<Scheduler>("scheduler", "ddim"));
  EXPECT_EQ(chosen->type_name(), "ddim_scheduler");

  EXPECT_THAT(
      Load(Good("value: \"ddim\" }", "value: \"ddim | eulr\" }") + euler),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("cfg.pbtxt:15:3: pipeline 'p': role "
                         "'scheduler' names component 'eulr', which "
                         "is not defined")));
  EXPECT_THAT(Load(Good("value: \"ddim\" }", "value: \"ddim | ddim\" }")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("names component 'ddim' twice")));
  EXPECT_THAT(Load(Good("value: \"ddim\" }", "value: \"ddim | gmm\" }")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("to be a Scheduler")));
}

}  // namespace
}  // namespace loopserve
