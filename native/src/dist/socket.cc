#include "socket.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace owlet::dist {

namespace {

std::string err_text(int e) { return std::strerror(e); }

// Milliseconds poll() may wait before the deadline (-1: no deadline).
int poll_ms(Deadline until) {
  if (until == Deadline::max()) return -1;
  int64_t left = ms_left(until);
  return left <= 0 ? 0 : int(left > 60000 ? 60000 : left);
}

void wait_ready(int fd, short events, Deadline until, const char* what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rv = ::poll(&p, 1, poll_ms(until));
    if (rv > 0) return;
    if (rv < 0 && errno == EINTR) continue;
    if (rv < 0) throw SocketError(std::string(what) + ": " + err_text(errno));
    if (until != Deadline::max() && ms_left(until) <= 0) throw SocketError(std::string(what) + ": timed out", true);
  }
}

struct AddrInfo {
  addrinfo* list = nullptr;
  AddrInfo(const std::string& host, int port, int socktype) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = socktype;
    std::string p = std::to_string(port);
    int rv = ::getaddrinfo(host.c_str(), p.c_str(), &hints, &list);
    if (rv != 0) throw SocketError("cannot resolve '" + host + "': " + gai_strerror(rv));
  }
  ~AddrInfo() { if (list) ::freeaddrinfo(list); }
};

}  // namespace

Socket& Socket::operator=(Socket&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Socket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Socket::shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

Socket Socket::connect(const std::string& host, int port, Deadline until) {
  std::string last = "timed out";
  int delay_ms = 50;
  for (;;) {
    AddrInfo ai(host, port, SOCK_STREAM);
    for (addrinfo* a = ai.list; a; a = a->ai_next) {
      int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
      if (fd < 0) { last = err_text(errno); continue; }
      Socket s(fd);
      int rv = ::connect(fd, a->ai_addr, a->ai_addrlen);
      if (rv < 0 && errno == EINPROGRESS) {
        try {
          wait_ready(fd, POLLOUT, until, "connect");
        } catch (const SocketError& e) {
          last = e.what();
          continue;
        }
        int so = 0;
        socklen_t len = sizeof so;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &len);
        rv = so == 0 ? 0 : -1;
        errno = so;
      }
      if (rv == 0) {
        int flags = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &flags, sizeof flags);
        return s;
      }
      last = err_text(errno);
    }
    if (ms_left(until) <= 0) throw SocketError("cannot connect to " + host + ":" + std::to_string(port) + " (" + last + ")", true);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(delay_ms, std::max<int64_t>(ms_left(until), 1))));
    delay_ms = std::min(delay_ms * 2, 500);
  }
}

void Socket::send_all(const void* data, size_t n, Deadline until) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t rv = ::send(fd_, p, n, MSG_NOSIGNAL);
    if (rv > 0) { p += rv; n -= size_t(rv); continue; }
    if (rv < 0 && errno == EINTR) continue;
    if (rv < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) { wait_ready(fd_, POLLOUT, until, "send"); continue; }
    throw SocketError("send: " + err_text(errno));
  }
}

void Socket::recv_all(void* data, size_t n, Deadline until) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t rv = ::recv(fd_, p, n, 0);
    if (rv > 0) { p += rv; n -= size_t(rv); continue; }
    if (rv == 0) throw SocketError("connection closed");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) { wait_ready(fd_, POLLIN, until, "recv"); continue; }
    throw SocketError("recv: " + err_text(errno));
  }
}

Listener::Listener(const std::string& bind_host, int port) {
  AddrInfo ai(bind_host.empty() ? "0.0.0.0" : bind_host, port, SOCK_STREAM);
  std::string last = "no address";
  for (addrinfo* a = ai.list; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) { last = err_text(errno); continue; }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
      port_ = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                       : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      fd_ = fd;
      return;
    }
    last = err_text(errno);
    ::close(fd);
  }
  throw SocketError("cannot listen on " + (bind_host.empty() ? std::string("*") : bind_host) + ":" + std::to_string(port) +
                    " (" + last + ")");
}

Listener::~Listener() {
  if (fd_ >= 0) ::close(fd_);
}

Socket Listener::accept() {
  for (;;) {
    int fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return Socket(fd);
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    return Socket();  // shut down (EINVAL) or out of descriptors
  }
}

void Listener::shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

std::string local_address_towards(const std::string& host, int port) {
  AddrInfo ai(host, port, SOCK_DGRAM);
  for (addrinfo* a = ai.list; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    Socket s(fd);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) continue;
    char buf[INET6_ADDRSTRLEN] = {0};
    const void* src = ss.ss_family == AF_INET6 ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr)
                                               : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&ss)->sin_addr);
    if (::inet_ntop(ss.ss_family, src, buf, sizeof buf)) return buf;
  }
  throw SocketError("no route from this host to " + host);
}

bool is_loopback_host(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

void Writer::u32(uint32_t v) {
  for (int i = 0; i < 4; i++) buf.push_back(char((v >> (8 * i)) & 0xff));
}

void Writer::bytes(const void* p, size_t n) {
  u32(uint32_t(n));
  const char* c = static_cast<const char*>(p);
  buf.insert(buf.end(), c, c + n);
}

uint8_t Reader::u8() {
  uint8_t v;
  s_.recv_all(&v, 1, until_);
  return v;
}

uint32_t Reader::u32() {
  unsigned char b[4];
  s_.recv_all(b, 4, until_);
  return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
}

std::vector<char> Reader::bytes(uint32_t max) {
  uint32_t n = u32();
  if (n > max) throw SocketError("message of " + std::to_string(n) + " bytes exceeds the limit of " + std::to_string(max));
  std::vector<char> v(n);
  if (n) s_.recv_all(v.data(), n, until_);
  return v;
}

std::string Reader::str(uint32_t max) {
  auto v = bytes(max);
  return std::string(v.begin(), v.end());
}

}  // namespace owlet::dist
