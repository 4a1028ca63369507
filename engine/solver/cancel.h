// Stopping a build: set by its caller, checked between and inside ops, and polled (fd()) by
// every wait on the client's fds.
#pragma once

#include <atomic>

#include "common/client_stream.h"
#include "common/error.h"

namespace kbuild::solver {

class CancelToken {
 public:
  void cancel() noexcept {
    canceled_ = true;
    signal_.cancel();
  }
  bool canceled() const { return canceled_; }
  // Throws kbuild::Error (canceled) when canceled.
  void check() const {
    if (canceled_) throw Error(ErrorKind::canceled, "build canceled");
  }
  // Readable once canceled.
  int fd() const { return signal_.fd(); }

 private:
  std::atomic<bool> canceled_{false};
  CancelSignal signal_;
};

}  // namespace kbuild::solver
