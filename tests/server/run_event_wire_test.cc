// SerializeRunEvent's bytes must parse back to the same message.
#include "server/run_event_wire.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <vector>

namespace loopserve {
namespace {

v1::Value TensorValue(std::vector<int64_t> shape, size_t bytes, char fill) {
  v1::Value value;
  v1::Tensor* t = value.mutable_tensor();
  t->set_datatype("FP32");
  for (int64_t d : shape) t->add_shape(d);
  t->set_raw_contents(std::string(bytes, fill));
  return value;
}

// Serialises `event` and parses the result back.
v1::RunEvent RoundTrip(const v1::RunEvent& event, size_t* slices = nullptr) {
  auto shared = std::make_shared<const v1::RunEvent>(event);
  grpc::ByteBuffer buffer;
  SerializeRunEvent(shared, &buffer);
  std::vector<grpc::Slice> parts;
  EXPECT_TRUE(buffer.Dump(&parts).ok());
  if (slices != nullptr) *slices = parts.size();
  std::string bytes;
  for (const grpc::Slice& part : parts) {
    bytes.append(reinterpret_cast<const char*>(part.begin()), part.size());
  }
  v1::RunEvent parsed;
  EXPECT_TRUE(parsed.ParseFromString(bytes));
  return parsed;
}

void ExpectSame(const v1::RunEvent& a, const v1::RunEvent& b) {
  std::string diff;
  google::protobuf::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(a, b)) << diff;
}

TEST(RunEventWireTest, IterationsWithLargeTensorsRoundTripWithoutCopies) {
  v1::RunEvent event;
  for (int i = 0; i < 3; ++i) {
    v1::Iteration* it = event.mutable_iterations()->add_items();
    it->set_index(i);
    it->set_total(3);
    it->set_loop("pipe/denoise");
    it->set_dropped_before(i == 2 ? 7 : 0);
    (*it->mutable_values())["latents"] =
        TensorValue({1, 4, 64, 64}, 65536, static_cast<char>('a' + i));
    (*it->mutable_values())["step"].set_int64_value(i == 0 ? 0 : -i);
    (*it->mutable_values())["scale"].set_double_value(0.5);
    v1::ValueList* list = (*it->mutable_values())["parts"].mutable_list_value();
    *list->add_values() = TensorValue({2}, 8, 'z');
    *list->add_values() = TensorValue({4096}, 16384, 'y');
    list->add_values()->set_string_value("");
  }
  size_t slices = 0;
  ExpectSame(RoundTrip(event, &slices), event);
  EXPECT_GE(slices, 6u);  // the six large payloads are slices of their own
}

TEST(RunEventWireTest, EmptyAndZeroFields) {
  v1::RunEvent event;
  v1::Iteration* it = event.mutable_iterations()->add_items();
  (*it->mutable_values())["empty"] = TensorValue({0}, 0, 0);
  (*it->mutable_values())["big"] = TensorValue({}, 5000, 'q');  // a scalar
  (*it->mutable_values())["flag"].set_bool_value(false);
  ExpectSame(RoundTrip(event), event);
}

TEST(RunEventWireTest, SmallEventsTakeTheOrdinaryPath) {
  v1::RunEvent started;
  started.mutable_started()->set_run_id("run-1");
  started.mutable_started()->set_queue_ms(0.25);
  size_t slices = 0;
  ExpectSame(RoundTrip(started, &slices), started);
  EXPECT_EQ(slices, 1u);

  v1::RunEvent ints;
  for (int i = 0; i < 100; ++i) {
    v1::Iteration* it = ints.mutable_iterations()->add_items();
    it->set_index(i);
    (*it->mutable_values())["x"].set_int64_value(i + 1);
  }
  ExpectSame(RoundTrip(ints, &slices), ints);
  EXPECT_EQ(slices, 1u);
}

TEST(RunEventWireTest, ResultWithTensorsAndStats) {
  v1::RunEvent event;
  v1::RunResult* result = event.mutable_result();
  (*result->mutable_outputs())["image"] =
      TensorValue({1, 64, 64, 3}, 12288, 'i');
  (*result->mutable_outputs())["x"].set_int64_value(5);
  result->mutable_stats()->set_iterations(5);
  result->mutable_stats()->set_run_ms(1.5);
  result->mutable_stats()->set_iterations_dropped(2);
  ExpectSame(RoundTrip(event), event);
}

TEST(RunEventWireTest, SlicesKeepTheEventAlive) {
  auto event = std::make_shared<v1::RunEvent>();
  (*event->mutable_iterations()->add_items()->mutable_values())["x"] =
      TensorValue({2048}, 8192, 'k');
  grpc::ByteBuffer buffer;
  SerializeRunEvent(event, &buffer);
  EXPECT_GT(event.use_count(), 1);
  buffer.Clear();
  EXPECT_EQ(event.use_count(), 1);
}

}  // namespace
}  // namespace loopserve
