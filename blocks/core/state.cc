#include "blocks/core/state.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace loopserve {

void PipelineState::SetInput(std::string name, c10::IValue value) {
  inputs_.insert_or_assign(std::move(name), std::move(value));
}

void PipelineState::SetIntermediate(std::string name, c10::IValue value) {
  intermediates_.insert_or_assign(std::move(name), std::move(value));
}

void PipelineState::EraseIntermediate(absl::string_view name) {
  intermediates_.erase(name);
}

const c10::IValue* PipelineState::GetInput(absl::string_view name) const {
  auto it = inputs_.find(name);
  return it == inputs_.end() ? nullptr : &it->second;
}

const c10::IValue* PipelineState::GetIntermediate(
    absl::string_view name) const {
  auto it = intermediates_.find(name);
  return it == intermediates_.end() ? nullptr : &it->second;
}

void PipelineState::SetResume(LoopResume resume) {
  resume_ = std::make_shared<LoopResume>(std::move(resume));
}

std::shared_ptr<LoopResume> PipelineState::TakeResume(
    absl::string_view loop_path) {
  if (resume_ == nullptr || resume_->loop != loop_path) return nullptr;
  return std::move(resume_);
}

void BlockState::Set(absl::string_view name, c10::IValue value) {
  if (c10::IValue* existing = Find(name)) {
    *existing = std::move(value);
    return;
  }
  entries_.emplace_back(std::string(name), std::move(value));
}

absl::Status BlockState::KindError(absl::string_view name,
                                   const c10::IValue* value,
                                   ValueKind wanted) const {
  if (value == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("block state has no value '", name, "'"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("value '", name, "' is ", KindName(KindOf(*value)),
                   ", expected ", KindName(wanted)));
}

}  // namespace loopserve
