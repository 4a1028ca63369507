// Reading and writing an fd a client passed in (a progress pipe, a stream output, an archive to
// load, a context tar) so that the client can never hold the thread doing it: every wait is a
// poll() that a cancel fd also wakes, never a blocking read() or write().
//
// The client shares the fd's file description, so its flags are left alone: a pipe or FIFO is
// reopened through /proc/self/fd as a description of our own with O_NONBLOCK, a socket is used
// with MSG_DONTWAIT, and anything else (a regular file, a device) is used as it is, since it
// does not wait on the client.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include "common/unique_fd.h"

namespace kbuild {

class ClientStream {
 public:
  enum class Direction { read, write };

  // `fd` is borrowed and must stay open while the stream is used; `cancel_fd` (an eventfd, a
  // pipe; -1 for none) turns readable to stop every wait. `what` names the stream in errors
  // ("output", "image archive"). Throws kbuild::Error when `fd` cannot be used.
  ClientStream(int fd, Direction direction, int cancel_fd, std::string what);

  // Writes all of `data`. Throws kbuild::Error: canceled once `cancel_fd` is readable, or
  // internal ("writing output: the reader has gone") when nobody reads any more.
  void write_all(const void* data, std::size_t size);
  // Writes what it can within `timeout`: the byte count, 0 when the reader took nothing in time.
  // Throws as write_all does.
  std::size_t write_some(const void* data, std::size_t size, std::chrono::milliseconds timeout);
  // Reads up to `size` bytes, waiting as long as needed: 0 only at end of file. Throws
  // kbuild::Error: canceled, or internal on a read error.
  std::size_t read_some(void* data, std::size_t size);

 private:
  // Waits until the fd is ready or `timeout` (-1: forever) passes; false on timeout.
  bool wait(short events, int timeout_ms);
  [[noreturn]] void throw_canceled() const;

  int fd_;
  UniqueFd own_;  // the reopened pipe, when there is one
  bool socket_ = false;
  bool nonblocking_ = false;
  int cancel_fd_;
  std::string what_;
};

// An eventfd that turns readable once cancel() is called, for ClientStream's cancel_fd and
// the other polls that a canceled call must wake. cancel() is async-signal-safe and idempotent.
class CancelSignal {
 public:
  CancelSignal();
  void cancel() noexcept;
  bool canceled() const;
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
};

}  // namespace kbuild
