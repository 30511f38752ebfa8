#include "store_server.h"

#include "store_protocol.h"

namespace owlet::dist {

StoreServer::StoreServer(const std::string& bind_host, int port) : listener_(bind_host, port) {
  acceptor_ = std::thread([this] { accept_loop(); });
}

StoreServer::~StoreServer() { stop(); }

void StoreServer::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& c : clients_) c->shutdown();
  }
  changed_.notify_all();
  listener_.shutdown();
  if (acceptor_.joinable()) acceptor_.join();
  for (auto& t : threads_) t.join();  // accept_loop has returned: nobody adds threads any more
  threads_.clear();
}

void StoreServer::accept_loop() {
  for (;;) {
    Socket s = listener_.accept();
    std::lock_guard<std::mutex> lock(mu_);
    if (!s.valid() || stopping_) return;
    clients_.push_back(std::make_unique<Socket>(std::move(s)));
    Socket* client = clients_.back().get();
    threads_.emplace_back([this, client] { serve(client); });
  }
}

void StoreServer::serve(Socket* s) {
  const auto reply_by = [] { return deadline_in(std::chrono::seconds(30)); };
  try {
    for (;;) {
      Reader r(*s, Deadline::max());
      auto op = StoreOp(r.u8());
      Writer w;
      if (op == StoreOp::Set) {
        std::string key = r.str();
        std::vector<char> value = r.bytes();
        {
          std::lock_guard<std::mutex> lock(mu_);
          data_[key] = std::move(value);
        }
        changed_.notify_all();
        w.u8(uint8_t(StoreStatus::Ok));
      } else if (op == StoreOp::Get || op == StoreOp::Wait) {
        std::vector<std::string> keys;
        if (op == StoreOp::Get) {
          keys.push_back(r.str());
        } else {
          uint32_t n = r.u32();
          if (n > 1u << 20) throw SocketError("too many keys");
          for (uint32_t i = 0; i < n; i++) keys.push_back(r.str());
        }
        auto until = deadline_in(std::chrono::milliseconds(r.u32()));
        std::unique_lock<std::mutex> lock(mu_);
        auto missing = [&] {
          std::vector<std::string> m;
          for (auto& k : keys) if (!data_.count(k)) m.push_back(k);
          return m;
        };
        changed_.wait_until(lock, until, [&] { return stopping_ || missing().empty(); });
        if (stopping_) return;
        auto m = missing();
        if (m.empty()) {
          w.u8(uint8_t(StoreStatus::Ok));
          if (op == StoreOp::Get) {
            auto& v = data_[keys[0]];
            w.bytes(v.data(), v.size());
          }
        } else {
          w.u8(uint8_t(StoreStatus::Timeout));
          w.u32(uint32_t(m.size()));
          for (auto& k : m) w.str(k);
        }
      } else {
        return;  // not our protocol: drop the connection
      }
      s->send_all(w.buf.data(), w.buf.size(), reply_by());
    }
  } catch (const SocketError&) {
    // the client went away (or the server is stopping): this connection is done
  }
}

}  // namespace owlet::dist
