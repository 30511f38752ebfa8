// Small blocking-socket helpers for the rendezvous store (client and server): connect with retries until a deadline,
// exact reads and writes bounded by a deadline, and the local address a host uses to reach another. Failures throw
// SocketError with errno's text; callers add what they were doing.
#pragma once
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace owlet::dist {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

struct SocketError : std::runtime_error {
  bool timed_out;
  SocketError(const std::string& m, bool to = false) : std::runtime_error(m), timed_out(to) {}
};

inline Deadline deadline_in(std::chrono::milliseconds ms) { return Clock::now() + ms; }
inline int64_t ms_left(Deadline d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d - Clock::now()).count();
}

// A connected TCP socket; closes on destruction.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() { close(); }
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void close();
  // Wakes a thread blocked on this socket (the fd stays open until close()).
  void shutdown();

  // Retries refused/unreachable connections every 50-500 ms until the deadline.
  static Socket connect(const std::string& host, int port, Deadline until);

  void send_all(const void* data, size_t n, Deadline until);
  // Reads exactly n bytes; throws SocketError("connection closed") on EOF.
  void recv_all(void* data, size_t n, Deadline until);

 private:
  int fd_ = -1;
};

// A listening socket. bind_host empty: all interfaces. port 0: an ephemeral port (port() says which).
class Listener {
 public:
  Listener(const std::string& bind_host, int port);
  ~Listener();
  int port() const { return port_; }
  // Blocks until a connection arrives; an invalid Socket once shutdown() was called.
  Socket accept();
  void shutdown();

 private:
  int fd_ = -1;
  int port_ = 0;
};

// The local IP address this host would use to reach host:port (no packet is sent), e.g. "127.0.0.1" for a loopback
// master, the LAN address for a remote one.
std::string local_address_towards(const std::string& host, int port);

bool is_loopback_host(const std::string& host);

// Framing: little-endian u32 lengths and u8 codes, as the store protocol uses them.
class Writer {
 public:
  void u8(uint8_t v) { buf.push_back(char(v)); }
  void u32(uint32_t v);
  void bytes(const void* p, size_t n);
  void str(const std::string& s) { bytes(s.data(), s.size()); }
  std::vector<char> buf;
};

class Reader {
 public:
  Reader(Socket& s, Deadline until) : s_(s), until_(until) {}
  uint8_t u8();
  uint32_t u32();
  std::vector<char> bytes(uint32_t max = 1u << 30);
  std::string str(uint32_t max = 1u << 20);

 private:
  Socket& s_;
  Deadline until_;
};

}  // namespace owlet::dist
