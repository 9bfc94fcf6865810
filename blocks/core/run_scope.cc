#include "blocks/core/run_scope.h"

#include <utility>

namespace loopserve {
namespace {

thread_local RunScope* current_scope = nullptr;

}  // namespace

RunScope::RunScope(Observer* observer)
    : observer_(observer), previous_(current_scope) {
  current_scope = this;
}

RunScope::~RunScope() {
  for (const std::shared_ptr<Member>& member : members_) {
    member->OnRunEnd(*this);
  }
  current_scope = previous_;
}

RunScope* RunScope::Current() { return current_scope; }

void RunScope::Join(std::shared_ptr<Member> member) {
  members_.push_back(std::move(member));
}

}  // namespace loopserve
