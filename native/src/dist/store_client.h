// The rendezvous store's client: owlet's small exchanges (arrival, resume path, data positions, NCCL's unique id) and,
// through an adapter in process_group.cc, gloo's full-mesh setup. get() waits until the key exists; every call is
// bounded by a timeout and throws StoreTimeout naming the keys still missing. No gloo here: the CUDA addon uses it too.
#pragma once
#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "socket.h"

namespace owlet::dist {

struct StoreTimeout : std::runtime_error {
  std::vector<std::string> missing;
  StoreTimeout(const std::string& m, std::vector<std::string> keys) : std::runtime_error(m), missing(std::move(keys)) {}
};

class StoreClient {
 public:
  // Connects, retrying until connect_timeout (the server may start after this process). Throws SocketError.
  StoreClient(const std::string& host, int port, std::chrono::milliseconds connect_timeout,
              std::chrono::milliseconds default_timeout);

  void set(const std::string& key, const std::vector<char>& data);
  std::vector<char> get(const std::string& key) { return get(key, timeout_); }
  std::vector<char> get(const std::string& key, std::chrono::milliseconds timeout);
  void wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout);

  void set_default_timeout(std::chrono::milliseconds t) { timeout_ = t; }
  std::string address() const { return host_ + ":" + std::to_string(port_); }

 private:
  // Sends a request; the server answers within `timeout` (plus a margin).
  void request(const Writer& w, std::chrono::milliseconds timeout);
  Deadline reply_deadline(std::chrono::milliseconds timeout) const;
  std::vector<std::string> read_missing(Reader& r);

  std::string host_;
  int port_;
  Socket sock_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
};

}  // namespace owlet::dist
