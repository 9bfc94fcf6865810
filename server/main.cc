// loopserve: for now, runs a seed pipeline in-process and prints x after
// every iteration. The streaming gRPC service replaces this (issue #3).
//
//   loopserve --pipeline=seed-loop --num_steps=5 --x=0
#include <c10/core/InferenceMode.h>

#include <cstdint>
#include <iostream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "blocks/builtin_blocks.h"
#include "blocks/core/block.h"
#include "blocks/core/status_macros.h"
#include "blocks/examples/seed_blocks.h"

ABSL_FLAG(std::string, pipeline, "seed-loop",
          "Pipeline to run: seed-loop or seed-loop-2");
ABSL_FLAG(int64_t, num_steps, 5, "Loop input num_steps");
ABSL_FLAG(int64_t, x, 0, "Input x");

namespace loopserve {
namespace {

// Prints the loop's intermediate outputs after every iteration.
class PrintingObserver : public IterationObserver {
 public:
  absl::Status OnIteration(const LoopIteration& iteration) override {
    std::cout << iteration.loop.path() << " iteration " << iteration.index.i + 1
              << "/" << iteration.index.total << ":";
    for (const OutputParam& output :
         iteration.loop.signature().intermediate_outputs) {
      if (const c10::IValue* value = iteration.state.Find(output.name)) {
        std::cout << " " << output.name << " = " << *value;
      }
    }
    std::cout << std::endl;
    return absl::OkStatus();
  }
};

absl::Status Main() {
  BlockRegistry registry;
  RETURN_IF_ERROR(RegisterBuiltinBlocks(registry));
  const std::string name = absl::GetFlag(FLAGS_pipeline);
  std::unique_ptr<Block> pipeline;
  if (name == kSeedLoopName) {
    ASSIGN_OR_RETURN(pipeline, MakeSeedLoop(registry));
  } else if (name == kSeedLoop2Name) {
    ASSIGN_OR_RETURN(pipeline, MakeSeedLoop2(registry));
  } else {
    return absl::NotFoundError(absl::StrCat("unknown pipeline '", name,
                                            "'; available: ", kSeedLoopName,
                                            ", ", kSeedLoop2Name));
  }

  c10::InferenceMode inference_mode;
  PipelineState state;
  state.SetInput("num_steps", absl::GetFlag(FLAGS_num_steps));
  state.SetInput("x", absl::GetFlag(FLAGS_x));
  PrintingObserver observer;
  RunContext context{.observer = &observer};
  RETURN_IF_ERROR(RunBlock(*pipeline, Components(), state, context));
  std::cout << name << " result: x = " << *state.GetIntermediate("x")
            << std::endl;
  return absl::OkStatus();
}

}  // namespace
}  // namespace loopserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Runs a seed loop pipeline and prints x after every iteration.");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status status = loopserve::Main(); !status.ok()) {
    std::cerr << "loopserve: " << status << std::endl;
    return 1;
  }
  return 0;
}
