// The rendezvous store's server: an in-memory key-value map served over TCP, one thread per client, so it keeps
// answering while the process that hosts it (the launcher, or rank 0 itself under torchrun/srun) is busy or blocked
// in a collective. Blocking GET/WAIT requests wait on a condition variable with the client's timeout.
#pragma once
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "socket.h"

namespace owlet::dist {

class StoreServer {
 public:
  // Listens on bind_host:port (port 0: an ephemeral port). Throws SocketError when the address is taken.
  StoreServer(const std::string& bind_host, int port);
  ~StoreServer();
  int port() const { return listener_.port(); }
  // Stops accepting, disconnects every client and joins the threads.
  void stop();

 private:
  void accept_loop();
  void serve(Socket* s);

  Listener listener_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, std::vector<char>> data_;
  std::vector<std::unique_ptr<Socket>> clients_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
  bool stopping_ = false;
};

}  // namespace owlet::dist
