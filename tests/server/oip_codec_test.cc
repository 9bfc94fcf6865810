// The Open Inference Protocol's mapping onto loopserve.v1
// (server/oip_codec.h): inputs, parameters, outputs, metadata, errors.
#include "server/oip_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::StatusIs;

template <typename T>
std::string Raw(T value) {
  std::string raw(sizeof(T), '\0');
  std::memcpy(raw.data(), &value, sizeof(T));
  return raw;
}

std::string BytesElement(const std::string& text) {
  return Raw<uint32_t>(text.size()) + text;
}

v1::PipelineDescription Pipeline() {
  v1::PipelineDescription pipeline;
  pipeline.set_name("p");
  const auto input = [&](const char* name, const char* type) {
    v1::ParamSpec* param = pipeline.add_inputs();
    param->set_name(name);
    param->set_type(type);
  };
  input("steps", "int");
  input("scale", "double");
  input("prompt", "string | list");
  input("flag", "bool");
  input("latents", "tensor");
  input("mixed", "int | double | tensor");
  pipeline.add_iteration_outputs()->set_name("latents");
  pipeline.add_iteration_outputs()->set_name("denoised");
  pipeline.add_outputs()->set_name("latents");
  pipeline.add_outputs()->set_name("image");
  pipeline.set_preview(true);
  return pipeline;
}

void AddInput(ModelInferRequest& request, const std::string& name,
              const std::string& datatype, std::vector<int64_t> shape,
              const std::string& raw) {
  ModelInferRequest::InferInputTensor* input = request.add_inputs();
  input->set_name(name);
  input->set_datatype(datatype);
  input->mutable_shape()->Assign(shape.begin(), shape.end());
  request.add_raw_input_contents(raw);
}

TEST(OipCodecTest, OneElementInputsOfScalarParamsAreScalars) {
  ModelInferRequest request;
  request.set_id("r1");
  AddInput(request, "steps", "INT64", {1},
           Raw<int64_t>((int64_t{1} << 60) + 1));  // beyond a double's 2^53
  AddInput(request, "scale", "FP32", {1}, Raw<float>(7.5f));
  AddInput(request, "prompt", "BYTES", {1}, BytesElement("a seven"));
  AddInput(request, "flag", "BOOL", {}, std::string(1, '\1'));
  AddInput(request, "mixed", "INT32", {1}, Raw<int32_t>(-3));
  ASSERT_OK_AND_ASSIGN(const v1::RunRequest run,
                       ToRunRequest(request, Pipeline()));
  EXPECT_EQ(run.pipeline(), "p");
  EXPECT_EQ(run.request_id(), "r1");
  EXPECT_EQ(run.inputs().at("steps").int64_value(), (int64_t{1} << 60) + 1);
  EXPECT_EQ(run.inputs().at("scale").double_value(), 7.5);
  EXPECT_EQ(run.inputs().at("prompt").string_value(), "a seven");
  EXPECT_TRUE(run.inputs().at("flag").bool_value());
  EXPECT_EQ(run.inputs().at("mixed").int64_value(), -3);
}

TEST(OipCodecTest, TensorsStayTensorsAndTypedContentsWork) {
  ModelInferRequest request;
  ModelInferRequest::InferInputTensor* latents = request.add_inputs();
  latents->set_name("latents");
  latents->set_datatype("FP32");
  latents->add_shape(1);  // one element, but the param takes only tensors
  latents->mutable_contents()->add_fp32_contents(0.25f);
  ModelInferRequest::InferInputTensor* prompts = request.add_inputs();
  prompts->set_name("prompt");
  prompts->set_datatype("BYTES");
  prompts->add_shape(2);
  prompts->mutable_contents()->add_bytes_contents("one");
  prompts->mutable_contents()->add_bytes_contents("two");
  ASSERT_OK_AND_ASSIGN(const v1::RunRequest run,
                       ToRunRequest(request, Pipeline()));
  const v1::Tensor& tensor = run.inputs().at("latents").tensor();
  EXPECT_EQ(tensor.datatype(), "FP32");
  EXPECT_THAT(tensor.shape(), ElementsAre(1));
  EXPECT_EQ(tensor.raw_contents(), Raw<float>(0.25f));
  const v1::ValueList& list = run.inputs().at("prompt").list_value();
  ASSERT_EQ(list.values_size(), 2);
  EXPECT_EQ(list.values(1).string_value(), "two");
}

TEST(OipCodecTest, ParametersAndOutputsChooseWhatIsStreamed) {
  ModelInferRequest request;
  (*request.mutable_parameters())["every"].set_int64_param(5);
  (*request.mutable_parameters())["backpressure"].set_string_param("LATEST");
  (*request.mutable_parameters())["preview"].set_bool_param(true);
  // Triton's own parameters are not ours: ignored.
  (*request.mutable_parameters())["triton_enable_empty_final_response"]
      .set_bool_param(true);
  request.add_outputs()->set_name("image");
  request.add_outputs()->set_name("denoised");
  ASSERT_OK_AND_ASSIGN(v1::RunRequest run, ToRunRequest(request, Pipeline()));
  EXPECT_EQ(run.stream().every(), 5u);
  EXPECT_EQ(run.stream().backpressure(), v1::StreamOptions::LATEST);
  EXPECT_TRUE(run.stream().preview());
  EXPECT_THAT(run.outputs(), ElementsAre("image"));
  EXPECT_THAT(run.stream().values(), ElementsAre("denoised"));

  (*request.mutable_parameters())["values"].set_string_param(
      "latents, denoised");
  ASSERT_OK_AND_ASSIGN(run, ToRunRequest(request, Pipeline()));
  EXPECT_THAT(run.stream().values(), ElementsAre("latents", "denoised"));
}

TEST(OipCodecTest, BadRequestsNameTheFieldAtFault) {
  const auto error = [](const ModelInferRequest& request) {
    return ToRunRequest(request, Pipeline()).status();
  };
  ModelInferRequest request;
  AddInput(request, "steps", "INT64", {2}, Raw<int64_t>(1));
  EXPECT_THAT(error(request),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'steps': shape [2] of INT64 needs 2 "
                                 "elements, but 1 were given")));
  request.mutable_inputs(0)->set_datatype("FP8");
  EXPECT_THAT(error(request), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("datatype 'FP8'")));
  request.mutable_inputs(0)->set_datatype("INT64");
  request.mutable_inputs(0)->set_shape(0, -1);
  EXPECT_THAT(error(request), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("negative dimension")));
  request.Clear();
  AddInput(request, "prompt", "BYTES", {1}, Raw<uint32_t>(100) + "short");
  EXPECT_THAT(error(request),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("a BYTES element says 100 bytes")));
  request.add_raw_input_contents("extra");
  EXPECT_THAT(error(request),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("raw_input_contents has 2 entries for 1")));
  request.Clear();
  request.add_inputs()->set_name("scale");
  request.mutable_inputs(0)->set_datatype("FP16");
  request.mutable_inputs(0)->add_shape(1);
  EXPECT_THAT(error(request), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("raw_input_contents")));
  request.Clear();
  (*request.mutable_parameters())["every"].set_string_param("2");
  EXPECT_THAT(error(request), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("parameter 'every'")));
  request.Clear();
  request.add_outputs()->set_name("nope");
  EXPECT_THAT(error(request),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("output 'nope' is not an output of pipeline "
                                 "'p' (its outputs: latents, image, "
                                 "denoised)")));
}

TEST(OipCodecTest, OutputsAreRawTensorsScalarsShapedOne) {
  ModelInferResponse response;
  v1::Value value;
  value.set_int64_value(42);
  ASSERT_OK(AppendOutput("steps", value, response));
  value.set_string_value("hi");
  ASSERT_OK(AppendOutput("text", value, response));
  value.mutable_tensor()->set_datatype("UINT8");
  value.mutable_tensor()->add_shape(2);
  value.mutable_tensor()->set_raw_contents("\x01\x02");
  ASSERT_OK(AppendOutput("image", value, response));
  value.mutable_list_value()->add_values()->set_double_value(0.5);
  value.mutable_list_value()->add_values()->set_double_value(1.5);
  ASSERT_OK(AppendOutput("sigmas", value, response));
  ASSERT_EQ(response.outputs_size(), 4);
  ASSERT_EQ(response.raw_output_contents_size(), 4);
  EXPECT_EQ(response.outputs(0).datatype(), "INT64");
  EXPECT_THAT(response.outputs(0).shape(), ElementsAre(1));
  EXPECT_EQ(response.raw_output_contents(0), Raw<int64_t>(42));
  EXPECT_EQ(response.outputs(1).datatype(), "BYTES");
  EXPECT_EQ(response.raw_output_contents(1), BytesElement("hi"));
  EXPECT_EQ(response.outputs(2).datatype(), "UINT8");
  EXPECT_EQ(response.raw_output_contents(2), "\x01\x02");
  EXPECT_EQ(response.outputs(3).datatype(), "FP64");
  EXPECT_THAT(response.outputs(3).shape(), ElementsAre(2));
  EXPECT_EQ(response.raw_output_contents(3),
            Raw<double>(0.5) + Raw<double>(1.5));

  v1::Value mixed;
  mixed.mutable_list_value()->add_values()->set_double_value(0.5);
  mixed.mutable_list_value()->add_values()->set_string_value("x");
  EXPECT_THAT(
      AppendOutput("mixed", mixed, response),
      StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("output 'mixed'")));
}

TEST(OipCodecTest, IterationsAndResultsCarryTheirPlaceAsParameters) {
  v1::Iteration iteration;
  iteration.set_index(3);
  iteration.set_total(10);
  iteration.set_loop("p/denoise");
  (*iteration.mutable_values())["x"].set_int64_value(4);
  iteration.set_preview_png("\x89PNG");
  ModelInferResponse response;
  ASSERT_OK(AppendIteration(iteration, response));
  EXPECT_EQ(response.parameters().at("iteration").int64_param(), 3);
  EXPECT_EQ(response.parameters().at("total").int64_param(), 10);
  EXPECT_EQ(response.parameters().at("loop").string_param(), "p/denoise");
  ASSERT_EQ(response.outputs_size(), 2);
  EXPECT_EQ(response.outputs(1).name(), "preview_png");
  EXPECT_EQ(response.raw_output_contents(1), BytesElement("\x89PNG"));

  v1::RunResult result;
  result.mutable_stats()->set_iterations(10);
  ModelInferResponse final;
  ASSERT_OK(AppendResult(result, final));
  EXPECT_TRUE(final.parameters().at("triton_final_response").bool_param());
  EXPECT_EQ(final.parameters().at("iterations").int64_param(), 10);
}

TEST(OipCodecTest, MetadataListsInputsThenFinalAndStreamedOutputs) {
  const inference::ModelMetadataResponse metadata = ToModelMetadata(Pipeline());
  EXPECT_EQ(metadata.name(), "p");
  EXPECT_THAT(metadata.versions(), ElementsAre("1"));
  std::vector<std::string> inputs;
  for (const auto& t : metadata.inputs()) {
    inputs.push_back(absl::StrCat(t.name(), ":", t.datatype(), ":",
                                  absl::StrJoin(t.shape(), ",")));
  }
  EXPECT_THAT(inputs,
              ElementsAre("steps:INT64:1", "scale:FP64:1", "prompt:BYTES:1",
                          "flag:BOOL:1", "latents:FP32:-1", "mixed:FP64:1"));
  std::vector<std::string> outputs;
  for (const auto& t : metadata.outputs()) outputs.push_back(t.name());
  EXPECT_THAT(outputs,
              ElementsAre("latents", "image", "denoised", "preview_png"));
}

}  // namespace
}  // namespace loopserve
