// Marks, for ThreadSanitizer, the order gRPC keeps between a reactor's
// operations and its reactions. Nothing in other builds.
//
// Note [hand-offs through gRPC]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// gRPC calls a reactor's reactions (OnReadDone, OnWriteDone, OnCancel,
// OnDone) on its own threads once what the reactor started (its
// constructor's return, StartRead, StartWrite, Finish) has gone through
// gRPC's completion queues. That order is real, but it is kept inside
// Debian's libgrpc, which is not instrumented: ThreadSanitizer would see a
// reactor's fields written on one thread and read on another with nothing
// between, and report races that are not there. So a reactor hands itself
// off before each operation it starts and takes itself over first thing
// in each reaction: the edge gRPC provides, made visible. Races among the
// reactor's own threads (gRPC's and the runs') are still seen: those go
// through its mutex, or are races.
#pragma once

#include "absl/base/config.h"

#ifdef ABSL_HAVE_THREAD_SANITIZER
#include <sanitizer/tsan_interface.h>
#endif

namespace loopserve {

// Before a reactor starts an operation (or returns from its constructor).
inline void HandOffToGrpc([[maybe_unused]] const void* reactor) {
#ifdef ABSL_HAVE_THREAD_SANITIZER
  __tsan_release(const_cast<void*>(reactor));
#endif
}

// First thing in a reaction.
inline void TakeOverFromGrpc([[maybe_unused]] const void* reactor) {
#ifdef ABSL_HAVE_THREAD_SANITIZER
  __tsan_acquire(const_cast<void*>(reactor));
#endif
}

}  // namespace loopserve
