// RunStream without gRPC: a fake writer completes writes when the test says.
#include "engine/run_stream.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "engine/stream_encoder.h"
#include "tests/blocks/core/fake_blocks.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::FakeDeclarations;
using ::loopserve::testing::FakeLoop;
using ::loopserve::testing::FakeStep;
using ::loopserve::testing::Output;
using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

class FakeWriter : public RunEventWriter {
 public:
  void StartWrite(std::shared_ptr<const v1::RunEvent> event) override {
    EXPECT_FALSE(in_flight) << "two writes in flight";
    EXPECT_FALSE(finished.has_value()) << "a write after Finish";
    in_flight = true;
    events.push_back(*event);
  }
  void Finish(const absl::Status& status) override {
    EXPECT_FALSE(in_flight) << "Finish with a write in flight";
    EXPECT_FALSE(finished.has_value()) << "Finish twice";
    finished = status;
  }

  bool in_flight = false;
  std::vector<v1::RunEvent> events;
  std::optional<absl::Status> finished;
};

class RunStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_ = std::make_unique<FakeLoop>();
    std::vector<SubBlock> steps;
    steps.push_back(
        {"step", std::make_unique<FakeStep>(FakeDeclarations{
                     .intermediate_outputs = {Output("x"), Output("y")}})});
    ASSERT_OK(loop_->SetSubBlocks(std::move(steps)));
    loop_->SetName("loop");
  }

  // Completes the write in flight.
  void WriteDone(RunStream& stream, bool ok = true) {
    ASSERT_TRUE(writer_.in_flight);
    writer_.in_flight = false;
    stream.OnWriteDone(ok);
  }

  absl::Status Iterate(RunStream& stream, int64_t i, const BlockState& state) {
    LoopIndex index{.i = i, .total = 10};
    return stream.OnIteration(
        LoopIteration{.loop = *loop_, .index = index, .state = state});
  }

  std::unique_ptr<FakeLoop> loop_;
  FakeWriter writer_;
};

StreamSelection All() {
  return {.values = {"x", "y"}, .every = 1, .latest = false, .outputs = {"x"}};
}

TEST_F(RunStreamTest, CancelledWhileQueuedFinishesAtOnceAndNeverStarts) {
  RunStream stream("run-1", "", All(), {}, &writer_);
  stream.Cancel(absl::CancelledError("gone"));
  ASSERT_TRUE(writer_.finished.has_value());
  EXPECT_THAT(*writer_.finished,
              StatusIs(absl::StatusCode::kCancelled, "gone"));
  EXPECT_FALSE(stream.Begin(0));
  EXPECT_TRUE(writer_.events.empty());
}

TEST_F(RunStreamTest, EventsInOrderThenFinishOk) {
  RunStream stream("run-1", "req", All(), {}, &writer_);
  ASSERT_TRUE(stream.Begin(0));
  ASSERT_EQ(writer_.events.size(), 1u);
  EXPECT_EQ(writer_.events[0].started().request_id(), "req");
  BlockState state;
  state.Set("x", int64_t{1});
  // Written while `started` is in flight: both iterations wait, then go in
  // one batch.
  ASSERT_OK(Iterate(stream, 0, state));
  state.Set("x", int64_t{2});
  ASSERT_OK(Iterate(stream, 1, state));
  WriteDone(stream);
  ASSERT_EQ(writer_.events.size(), 2u);
  EXPECT_EQ(writer_.events[1].iterations().items_size(), 2);

  PipelineState final_state;
  final_state.SetIntermediate("x", int64_t{2});
  stream.End(absl::OkStatus(), final_state, {});
  EXPECT_FALSE(writer_.finished.has_value());  // a write is in flight
  WriteDone(stream);
  ASSERT_EQ(writer_.events.size(), 3u);
  EXPECT_EQ(writer_.events[2].result().outputs().at("x").int64_value(), 2);
  EXPECT_EQ(writer_.events[2].result().stats().iterations_sent(), 2u);
  WriteDone(stream);
  ASSERT_TRUE(writer_.finished.has_value());
  EXPECT_OK(*writer_.finished);
}

TEST_F(RunStreamTest, ReusedIterationsCarryOnlyThisIterationsValues) {
  RunStream stream("run-1", "", All(), {}, &writer_);
  ASSERT_TRUE(stream.Begin(0));
  WriteDone(stream);  // started
  BlockState first;
  first.Set("x", int64_t{1});
  first.Set("y", c10::IValue());  // None: not sent
  ASSERT_OK(Iterate(stream, 0, first));
  WriteDone(stream);  // the message returns for reuse

  BlockState second;
  second.Set("y", 2.5);
  ASSERT_OK(Iterate(stream, 1, second));
  ASSERT_EQ(writer_.events.size(), 3u);
  const v1::Iteration& item = writer_.events[2].iterations().items(0);
  EXPECT_EQ(item.index(), 1);
  std::vector<std::string> keys;
  for (const auto& [key, value] : item.values()) keys.push_back(key);
  EXPECT_THAT(keys, UnorderedElementsAre("y"));
  EXPECT_EQ(item.values().at("y").double_value(), 2.5);
  WriteDone(stream);
  stream.End(absl::InternalError("boom"), PipelineState(), {});
  ASSERT_TRUE(writer_.finished.has_value());
  EXPECT_THAT(*writer_.finished, StatusIs(absl::StatusCode::kInternal, "boom"));
}

TEST_F(RunStreamTest, LatestReplacesWhatTheWriterHasNotTaken) {
  StreamSelection selection = All();
  selection.latest = true;
  RunStream stream("run-1", "", selection, {}, &writer_);
  ASSERT_TRUE(stream.Begin(0));  // `started` in flight
  BlockState state;
  for (int64_t i = 0; i < 5; ++i) {
    state.Set("x", i);
    ASSERT_OK(Iterate(stream, i, state));
  }
  WriteDone(stream);
  ASSERT_EQ(writer_.events.size(), 2u);
  const v1::Iteration& item = writer_.events[1].iterations().items(0);
  EXPECT_EQ(writer_.events[1].iterations().items_size(), 1);
  EXPECT_EQ(item.index(), 4);
  EXPECT_EQ(item.dropped_before(), 4u);
}

// Note [backpressure]: under BLOCK a full queue holds the loop until the
// writer takes what is queued; nothing is dropped.
TEST_F(RunStreamTest, BlockMakesTheLoopWaitForRoom) {
  RunStream stream("run-1", "", All(), {.max_queued_iterations = 2}, &writer_);
  ASSERT_TRUE(stream.Begin(0));  // `started` in flight: nothing is taken
  BlockState state;
  for (int64_t i = 0; i < 2; ++i) {
    state.Set("x", i);
    ASSERT_OK(Iterate(stream, i, state));
  }
  // The queue is full: the third iteration waits.
  absl::Notification returned;
  std::thread loop([&] {
    BlockState third;
    third.Set("x", int64_t{2});
    EXPECT_OK(Iterate(stream, 2, third));
    returned.Notify();
  });
  // With an unbounded queue it would return at once.
  EXPECT_FALSE(
      returned.WaitForNotificationWithTimeout(absl::Milliseconds(200)));
  EXPECT_EQ(writer_.events.size(), 1u);
  WriteDone(stream);  // `started` written; the two queued go out: room
  loop.join();
  EXPECT_TRUE(returned.HasBeenNotified());
  ASSERT_EQ(writer_.events.size(), 2u);
  WriteDone(stream);
  ASSERT_EQ(writer_.events.size(), 3u);
  std::vector<int64_t> sent;
  for (size_t e = 1; e < writer_.events.size(); ++e) {
    for (const v1::Iteration& item : writer_.events[e].iterations().items()) {
      sent.push_back(item.values().at("x").int64_value());
      EXPECT_EQ(item.dropped_before(), 0u);
    }
  }
  EXPECT_THAT(sent, ElementsAre(0, 1, 2));
  WriteDone(stream);
  stream.End(absl::CancelledError("done"), PipelineState(), {});
}

// A preview that names what it reads (so the stream draws it off the
// loop's thread, from host copies) and draws x's sum as text.
class SumPreview final : public IterationPreview {
 public:
  absl::StatusOr<std::string> RenderPng(
      const BlockState& state) const override {
    if (fail) return absl::InvalidArgumentError("x is not an image");
    // Only what it reads, copied.
    if (state.size() != 1) return absl::InternalError("more than x");
    return absl::StrCat("sum=", state.OptionalTensor("x").sum().item<float>());
  }
  std::vector<std::string> reads() const override { return {"x"}; }
  bool fail = false;
};

// Note [deferred encoding]: the device's path (copy now, encode and draw
// later) gives the messages the inline path gives.
TEST_F(RunStreamTest, DeferredValuesAndPreviewsEqualInlineOnes) {
  SumPreview preview;
  auto stream_events = [&](bool deferred) {
    FakeWriter writer;
    StreamSelection selection = All();
    selection.preview = &preview;
    RunStream stream("run-1", "", selection, {.defer_cpu_values = deferred},
                     &writer);
    EXPECT_TRUE(stream.Begin(0));
    BlockState state;
    at::Tensor x = at::arange(6, at::kFloat).reshape({2, 3});
    for (int64_t i = 0; i < 3; ++i) {
      state.Set("x", x);
      state.Set("y", i);
      EXPECT_OK(Iterate(stream, i, state));
      // The loop changes its tensor in place after the iteration: the
      // stream holds its own copy.
      x.add_(1);
    }
    writer.in_flight = false;
    stream.OnWriteDone(true);
    return writer.events;
  };
  const std::vector<v1::RunEvent> inline_events = stream_events(false);
  const std::vector<v1::RunEvent> deferred_events = stream_events(true);
  ASSERT_EQ(inline_events.size(), 2u);
  ASSERT_EQ(deferred_events.size(), 2u);
  const auto& items = deferred_events[1].iterations().items();
  ASSERT_EQ(items.size(), 3);
  EXPECT_EQ(items[0].preview_png(), "sum=15");
  EXPECT_EQ(items[2].preview_png(), "sum=27");
  EXPECT_EQ(items[2].values().at("x").tensor().shape_size(), 2);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(
      deferred_events[1], inline_events[1]))
      << deferred_events[1].DebugString() << "\nvs\n"
      << inline_events[1].DebugString();
}

// The loop queues its iterations and goes on while the encoder is busy;
// the encoder then finishes them, in order.
TEST_F(RunStreamTest, TheLoopDoesNotWaitForTheEncoder) {
  absl::Notification encoder_free;
  auto encoder = std::make_unique<StreamEncoder>(1);
  encoder->Post([&] { encoder_free.WaitForNotification(); });
  RunStream stream("run-1", "", All(),
                   {.encoder = encoder.get(), .defer_cpu_values = true},
                   &writer_);
  ASSERT_TRUE(stream.Begin(0));
  WriteDone(stream);  // started: nothing deferred, written at once
  BlockState state;
  for (int64_t i = 0; i < 5; ++i) {
    state.Set("x", at::full({4}, static_cast<double>(i)));
    ASSERT_OK(Iterate(stream, i, state));  // returns: nothing waits
  }
  EXPECT_EQ(writer_.events.size(), 1u);  // the first batch is still queued
  encoder_free.Notify();
  encoder.reset();  // its threads have finished their work
  ASSERT_EQ(writer_.events.size(), 2u);
  const auto& items = writer_.events[1].iterations().items();
  ASSERT_EQ(items.size(), 1);  // taken before the rest were queued
  EXPECT_EQ(items[0].index(), 0);
  EXPECT_EQ(items[0].values().at("x").tensor().shape(0), 4);
}

// A preview that fails on the encoder's thread ends the run with its error,
// as it would have on the loop's.
TEST_F(RunStreamTest, APreviewFailingOffTheLoopEndsTheRun) {
  SumPreview preview;
  preview.fail = true;
  StreamSelection selection = All();
  selection.preview = &preview;
  RunStream stream("run-1", "", selection, {}, &writer_);
  ASSERT_TRUE(stream.Begin(0));
  WriteDone(stream);
  BlockState state;
  state.Set("x", at::ones({2}));
  ASSERT_OK(Iterate(stream, 0, state));  // drawn when the write starts
  EXPECT_THAT(Iterate(stream, 1, state),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "preview: x is not an image"));
  EXPECT_FALSE(writer_.finished.has_value());  // the run has not ended
  stream.End(absl::InvalidArgumentError("preview: x is not an image"),
             PipelineState(), {});
  ASSERT_TRUE(writer_.finished.has_value());
  EXPECT_THAT(*writer_.finished, StatusIs(absl::StatusCode::kInvalidArgument,
                                          "preview: x is not an image"));
  EXPECT_EQ(writer_.events.size(), 1u);  // only `started` was written
}

TEST_F(RunStreamTest, CancelStopsTheLoopAndFinishesOnceItEnds) {
  RunStream stream("run-1", "", All(), {}, &writer_);
  ASSERT_TRUE(stream.Begin(0));
  stream.Cancel(absl::DeadlineExceededError("late"));
  BlockState state;
  state.Set("x", int64_t{1});
  EXPECT_THAT(Iterate(stream, 0, state),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "late"));
  EXPECT_FALSE(writer_.finished.has_value());  // `started` still in flight
  WriteDone(stream, /*ok=*/false);
  EXPECT_FALSE(writer_.finished.has_value());  // the run has not ended
  stream.End(absl::DeadlineExceededError("late"), PipelineState(), {});
  ASSERT_TRUE(writer_.finished.has_value());
  EXPECT_THAT(*writer_.finished,
              StatusIs(absl::StatusCode::kDeadlineExceeded, "late"));
  EXPECT_EQ(writer_.events.size(), 1u);
}

}  // namespace
}  // namespace loopserve
