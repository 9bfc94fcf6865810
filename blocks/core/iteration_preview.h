// IterationPreview: a component that renders a loop iteration as a picture
// for the client, the hook through which a model family shows its loop at
// work without the engine or a front knowing its values.
//
// A client asks for previews with StreamOptions.preview; the engine then
// calls the IterationPreview bound to the pipeline's "preview" role after
// every streamed iteration and sends the bytes as Iteration.preview_png. A
// pipeline without one refuses such requests, and DescribePipeline says
// whether it has one. blocks/diffusion's latent_preview is one: it renders
// the predicted x0 (`denoised`), else `latents`.
//
//   class MyPreview final : public IterationPreview {
//    public:
//     absl::StatusOr<std::string> RenderPng(
//         const BlockState& state) const override { ... }
//   };
//   registry.Register<MyPreview, IterationPreview>("my_preview", factory);
//
// Thread-safety: like every component, RenderPng is const and called from
// many runs at once.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/state.h"

namespace loopserve {

// The role an IterationPreview is bound to.
inline constexpr absl::string_view kPreviewRole = "preview";

class IterationPreview {
 public:
  virtual ~IterationPreview() = default;

  // A PNG picture of `state` after an iteration; empty when the state holds
  // nothing to show. It runs for every streamed iteration, so keep it
  // cheap.
  virtual absl::StatusOr<std::string> RenderPng(
      const BlockState& state) const = 0;

  // The values RenderPng reads. When it names them, the engine copies just
  // those off the device without waiting, and RenderPng runs on another
  // thread with a BlockState of their host copies, so the loop goes on
  // meanwhile (Note [deferred encoding] in engine/run_stream.h). When empty,
  // RenderPng gets the loop's shared BlockState, on the run's thread.
  virtual std::vector<std::string> reads() const { return {}; }
};

}  // namespace loopserve
