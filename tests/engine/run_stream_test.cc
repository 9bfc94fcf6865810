// RunStream without gRPC: a fake writer completes writes when the test says.
#include "engine/run_stream.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

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
