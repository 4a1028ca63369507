// The control protocol of SSH agent forwarding (`--ssh ID[=PATH]` with `RUN --mount=type=ssh`)
// between kbuildd and kbuildctl, and what both ends share to serve its connections.
//
// For each `--ssh` ID, kbuildctl hands kbuildd one end of an AF_UNIX SOCK_STREAM socketpair: the
// control socket. Each time a process in a step connects to the agent socket mounted in its
// sandbox, kbuildd makes a socketpair, sends one end to kbuildctl in a `connection` frame and
// splices the step's connection with the other; kbuildctl connects to the real agent and serves
// the fd it received. Only fds cross: kbuildd never sees a key, and never speaks the agent
// protocol itself.
//
// A frame is one type byte, a 4-byte big-endian payload length, the payload. The one frame is
//
//   connection(u64 number) + exactly one fd (SCM_RIGHTS, sent with the frame's bytes)
//                           kbuildd -> kbuildctl; `number` counts a proxy's connections, for
//                           messages only
//
// kbuildctl sends nothing: a byte from it, or its hang-up, ends that forwarding on kbuildd's
// side. kbuildd closing its end is the normal end for kbuildctl. A frame is 13 bytes, which an
// AF_UNIX stream socket sends as one skb, whole or not at all; so several steps may send on one
// control socket at once without interleaving their frames.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/client_stream.h"
#include "common/unique_fd.h"

namespace kbuild::sandbox::ssh_forward {

enum class FrameType : std::uint8_t {
  connection = 1,
};

inline constexpr std::size_t kHeaderSize = 5;
// The largest payload either end accepts; a connection frame has 8 bytes.
inline constexpr std::size_t kPayloadLimit = 64;

// A connection frame as kbuildctl receives it.
struct ReceivedConnection {
  std::uint64_t number = 0;
  UniqueFd fd;
};

// Sends `fd` (borrowed) in a connection frame on `control`. Waits for room while polling
// `wake_fds` (-1 entries skipped): canceled once one is readable. Throws internal "kbuildctl
// closed the SSH agent forwarding" when the peer has gone.
void send_connection(int control, int fd, std::uint64_t number, std::initializer_list<int> wake_fds);

// The next connection frame on `control`, or nullopt when kbuildd closed its end between frames.
// Throws canceled once `stop_fd` is readable; internal "kbuildd sent a malformed frame: ..." for a
// frame of another type or size, without exactly one fd, or cut short. Received fds are CLOEXEC.
std::optional<ReceivedConnection> receive_connection(int control, int stop_fd);

// Waits until `fd` is ready for `events` (POLLIN, POLLOUT): true, or false once one of
// `wake_fds` (-1 entries skipped) is readable first. POLLHUP and POLLERR on `fd` count as ready,
// so that the caller's next read or write reports them.
bool wait_ready(int fd, short events, std::initializer_list<int> wake_fds);

// The checks a control socket gets where it enters: an AF_UNIX SOCK_STREAM socket, or a user
// error naming `what`.
void check_control_socket(int fd, const std::string& what);

// The threads serving one forwarding's connections, one each, at most `limit` at a time. The
// destructor (or stop()) wakes every thread through stop_fd() and joins them all, so nothing
// outlives the owner.
class ConnectionThreads {
 public:
  explicit ConnectionThreads(std::size_t limit) : limit_(limit) {}
  ~ConnectionThreads() { stop(); }
  ConnectionThreads(const ConnectionThreads&) = delete;
  ConnectionThreads& operator=(const ConnectionThreads&) = delete;

  // Runs `serve(stop_fd)` on a thread of its own; false, without running it, when `limit`
  // connections are being served or stop() was called. `serve` must not throw, and must return
  // soon once stop_fd is readable.
  bool start(std::function<void(int stop_fd)> serve);
  // Wakes and joins every thread; later start() calls refuse.
  void stop() noexcept;
  // How many are being served now.
  std::size_t active();
  int stop_fd() const { return stop_.fd(); }

 private:
  struct Worker {
    std::thread thread;
    bool done = false;  // under mutex_, set by the thread as its last act
  };
  // Joins the threads that are done; called with mutex_ held.
  void reap_locked();

  std::size_t limit_;
  CancelSignal stop_;
  std::mutex mutex_;
  std::list<Worker> workers_;
  bool stopped_ = false;
};

}  // namespace kbuild::sandbox::ssh_forward
