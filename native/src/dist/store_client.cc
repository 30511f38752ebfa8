#include "store_client.h"

#include "store_protocol.h"

namespace owlet::dist {

namespace {
constexpr auto kMargin = std::chrono::seconds(10);  // the server answers a timed request by its timeout; allow latency
uint32_t clamp_ms(std::chrono::milliseconds t) {
  return uint32_t(std::max<int64_t>(0, std::min<int64_t>(t.count(), 0x7fffffff)));
}
}  // namespace

StoreClient::StoreClient(const std::string& host, int port, std::chrono::milliseconds connect_timeout,
                         std::chrono::milliseconds default_timeout)
    : host_(host), port_(port), timeout_(default_timeout) {
  sock_ = Socket::connect(host, port, deadline_in(connect_timeout));
}

Deadline StoreClient::reply_deadline(std::chrono::milliseconds timeout) const { return deadline_in(timeout + kMargin); }

void StoreClient::request(const Writer& w, std::chrono::milliseconds timeout) {
  try {
    sock_.send_all(w.buf.data(), w.buf.size(), reply_deadline(timeout));
  } catch (const SocketError& e) {
    throw SocketError("lost the rendezvous store at " + address() + " (" + e.what() + ")");
  }
}

std::vector<std::string> StoreClient::read_missing(Reader& r) {
  std::vector<std::string> missing;
  uint32_t m = r.u32();
  for (uint32_t i = 0; i < m; i++) missing.push_back(r.str());
  return missing;
}

void StoreClient::set(const std::string& key, const std::vector<char>& data) {
  std::lock_guard<std::mutex> lock(mu_);
  Writer w;
  w.u8(uint8_t(StoreOp::Set));
  w.str(key);
  w.bytes(data.data(), data.size());
  request(w, std::chrono::milliseconds(0));
  try {
    Reader r(sock_, reply_deadline(std::chrono::milliseconds(0)));
    r.u8();
  } catch (const SocketError& e) {
    throw SocketError("lost the rendezvous store at " + address() + " (" + e.what() + ")");
  }
}

std::vector<char> StoreClient::get(const std::string& key, std::chrono::milliseconds timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  Writer w;
  w.u8(uint8_t(StoreOp::Get));
  w.str(key);
  w.u32(clamp_ms(timeout));
  request(w, timeout);
  try {
    Reader r(sock_, reply_deadline(timeout));
    if (StoreStatus(r.u8()) == StoreStatus::Ok) return r.bytes();
    auto missing = read_missing(r);
    throw StoreTimeout("timed out after " + std::to_string(timeout.count()) + " ms waiting for store key '" + key + "'",
                       missing);
  } catch (const SocketError& e) {
    throw SocketError("lost the rendezvous store at " + address() + " (" + e.what() + ")");
  }
}

void StoreClient::wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  Writer w;
  w.u8(uint8_t(StoreOp::Wait));
  w.u32(uint32_t(keys.size()));
  for (auto& k : keys) w.str(k);
  w.u32(clamp_ms(timeout));
  request(w, timeout);
  try {
    Reader r(sock_, reply_deadline(timeout));
    if (StoreStatus(r.u8()) == StoreStatus::Ok) return;
    auto missing = read_missing(r);
    std::string list;
    for (auto& k : missing) list += (list.empty() ? "" : ", ") + k;
    throw StoreTimeout("timed out after " + std::to_string(timeout.count()) + " ms waiting for store keys " + list, missing);
  } catch (const SocketError& e) {
    throw SocketError("lost the rendezvous store at " + address() + " (" + e.what() + ")");
  }
}

}  // namespace owlet::dist
