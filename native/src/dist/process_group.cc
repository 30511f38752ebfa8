#include "process_group.h"

#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <sstream>

namespace owlet::dist {

namespace {

const std::string kArrive = "owlet/arrive/";
const std::string kWorld = " world ";  // in an arrival: " world <WORLD_SIZE>"

// gloo's view of the store (its full-mesh setup publishes and reads the pairs' addresses through it).
class GlooStore : public gloo::rendezvous::Store {
 public:
  explicit GlooStore(StoreClient& c) : c_(c) {}
  void set(const std::string& key, const std::vector<char>& data) override { c_.set(key, data); }
  std::vector<char> get(const std::string& key) override { return c_.get(key); }
  void wait(const std::vector<std::string>& keys) override { c_.wait(keys); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override { c_.wait(keys, timeout); }

 private:
  StoreClient& c_;
};

std::string seconds(std::chrono::milliseconds ms) {
  std::ostringstream s;
  s << double(ms.count()) / 1000 << " s";
  return s.str();
}

// gloo prefixes its messages with "[/path/file.cc:123] "; the reader wants the reason.
std::string gloo_reason(const std::exception& e) {
  std::string m = e.what();
  if (!m.empty() && m[0] == '[') {
    auto close = m.find("] ");
    if (close != std::string::npos) m = m.substr(close + 2);
  }
  return m;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); i++) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

std::string megabytes(size_t bytes) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(1);
  if (bytes < 1000) s << bytes << " bytes";
  else if (bytes < 1000000) s << double(bytes) / 1e3 << " kB";
  else s << double(bytes) / 1e6 << " MB";
  return s.str();
}

// What a gloo failure usually means, for the person reading the log.
std::string hint(const std::string& reason, const char* op) {
  if (reason.find("closed by peer") != std::string::npos || reason.find("reset by peer") != std::string::npos ||
      reason.find("Broken pipe") != std::string::npos)
    return " (another rank exited or crashed: see its own error)";
  if (reason.find("Timed out") != std::string::npos || reason.find("timeout") != std::string::npos)
    return std::string(" (another rank did not join this ") + op + " in time: it may have stopped, be stuck, or be in a different collective)";
  return "";
}

}  // namespace

std::string ProcessGroup::where() const { return "rank " + std::to_string(o_.rank) + " of " + std::to_string(o_.size); }

ProcessGroup::ProcessGroup(const GroupOptions& o) : o_(o) {
  const auto until = deadline_in(o.rendezvous_timeout);
  const std::string store_at = o.master_addr + ":" + std::to_string(o.master_port);
  if (o.host_store) {
    try {
      server_ = std::make_unique<StoreServer>(is_loopback_host(o.master_addr) ? o.master_addr : "", o.master_port);
    } catch (const SocketError& e) {
      fail("rendezvous", std::string("cannot host the rendezvous store: ") + e.what() +
                             " (is another run using this --master-port / MASTER_PORT?)");
    }
    o_.master_port = server_->port();
  }
  const std::string at = o.master_addr + ":" + std::to_string(o_.master_port);
  try {
    store_ = std::make_unique<StoreClient>(o.master_addr, o_.master_port, o.rendezvous_timeout, o.rendezvous_timeout);
  } catch (const SocketError& e) {
    fail("rendezvous", "cannot reach the rendezvous store at " + at + " within " + seconds(o.rendezvous_timeout) +
                           " (" + e.what() + "): the process that hosts it (the launcher of node 0, or rank 0) is not running");
  }

  // Arrival: every rank announces itself with its world size, then waits for all the others, so a missing rank is
  // named. The world sizes are compared as the ranks arrive: ranks started with different WORLD_SIZEs (nodes launched
  // with different --nproc-per-node or --nnodes) waited out the rendezvous timeout for ranks that do not exist, or
  // for a mesh the others never build, and then named neither.
  try {
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    std::string me = std::string(host) + " pid " + std::to_string(getpid()) + kWorld + std::to_string(o.size);
    store_->set(kArrive + std::to_string(o.rank), std::vector<char>(me.begin(), me.end()));
    std::vector<std::string> keys;
    for (int r = 0; r < o.size; r++) keys.push_back(kArrive + std::to_string(r));
    std::vector<bool> checked(o.size, false);
    for (bool all = false; !all;) {
      std::vector<std::string> missing;
      try {
        store_->wait(keys, std::chrono::milliseconds(std::max<int64_t>(std::min<int64_t>(ms_left(until), 500), 1)));
        all = true;
      } catch (const StoreTimeout& e) {
        if (ms_left(until) <= 0) throw;
        missing = e.missing;
      }
      for (int r = 0; r < o.size; r++) {
        if (checked[r] || std::find(missing.begin(), missing.end(), keys[r]) != missing.end()) continue;
        checked[r] = true;
        auto v = store_->get(keys[r], std::chrono::milliseconds(1000));
        std::string theirs(v.begin(), v.end());
        auto at = theirs.rfind(kWorld);
        std::string world = at == std::string::npos ? "?" : theirs.substr(at + kWorld.size());
        if (world != std::to_string(o.size)) {
          fail("rendezvous", "rank " + std::to_string(r) + " (" + theirs.substr(0, at) + ") was started with WORLD_SIZE=" + world +
                                 ", this rank with " + std::to_string(o.size) + ": every rank of a run needs the same " +
                                 "WORLD_SIZE (owlet launch: the same --nnodes and --nproc-per-node on every node)");
        }
      }
    }
  } catch (const StoreTimeout& e) {
    std::vector<int> missing;
    for (auto& k : e.missing) if (k.rfind(kArrive, 0) == 0) missing.push_back(std::stoi(k.substr(kArrive.size())));
    fail("rendezvous", "timed out after " + seconds(o.rendezvous_timeout) + ": " + rank_list(missing) + " of " +
                           std::to_string(o.size) + " did not arrive (store " + at + ")");
  } catch (const SocketError& e) {
    fail("rendezvous", e.what());
  }

  // gloo's full mesh: each rank publishes its pairs' addresses through the store and connects to the others.
  try {
    gloo::transport::tcp::attr attr;
    if (!o.iface.empty()) attr.iface = o.iface;
    else attr.hostname = local_address_towards(o.master_addr, o_.master_port);
    auto dev = gloo::transport::tcp::CreateDevice(attr);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(o.rank, o.size);
    auto left = std::chrono::milliseconds(std::max<int64_t>(ms_left(until), 1000));
    ctx->setTimeout(left);
    store_->set_default_timeout(left);
    GlooStore gloo_store(*store_);
    gloo::rendezvous::PrefixStore prefixed("owlet/gloo", gloo_store);
    ctx->connectFullMesh(prefixed, dev);
    ctx->setTimeout(o.op_timeout);
    store_->set_default_timeout(o.op_timeout);
    ctx_ = ctx;
  } catch (const StoreTimeout& e) {
    fail("rendezvous", std::string("connecting the ranks ") + e.what());
  } catch (const std::exception& e) {
    fail("rendezvous", "connecting the ranks failed: " + gloo_reason(e));
  }
}

void ProcessGroup::fail(const std::string& what, const std::string& why) {
  std::string msg = what + " on " + where() + ": " + why;
  if (broken_.empty()) broken_ = msg;
  throw Error(ErrorKind::Distributed, msg);
}

void ProcessGroup::check_usable(const char* op) const {
  if (!broken_.empty()) throw Error(ErrorKind::Distributed, std::string(op) + ": the process group is broken since: " + broken_);
  if (!ctx_) throw Error(ErrorKind::Distributed, std::string(op) + ": the process group is closed");
}

std::vector<ProcessGroup::Bucket> ProcessGroup::plan(const std::vector<Tensor*>& xs, size_t bucket_bytes) {
  std::vector<Bucket> out;
  for (size_t i = 0; i < xs.size(); i++) {
    size_t b = xs[i]->nbytes();
    if (b == 0) continue;
    if (out.empty() || out.back().bytes + b > bucket_bytes || out.back().first + out.back().count != i) {
      out.push_back({i, 1, b});
    } else {
      out.back().count++;
      out.back().bytes += b;
    }
  }
  return out;
}

void ProcessGroup::allreduce_sum(const std::vector<Tensor*>& xs, size_t bucket_bytes) {
  check_usable("allreduce");
  auto buckets = plan(xs, bucket_bytes);
  for (size_t bi = 0; bi < buckets.size(); bi++) {
    const Bucket& b = buckets[bi];
    float* buf;
    if (b.count == 1) {
      buf = xs[b.first]->f32();
    } else {
      scratch_.resize(b.bytes);
      char* p = scratch_.data();
      for (size_t i = b.first; i < b.first + b.count; i++) { std::memcpy(p, xs[i]->raw(), xs[i]->nbytes()); p += xs[i]->nbytes(); }
      buf = reinterpret_cast<float*>(scratch_.data());
    }
    try {
      gloo::AllreduceOptions opts(ctx_);
      opts.setOutput(buf, b.bytes / sizeof(float));
      opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
      opts.setTag(tag_++);
      opts.setTimeout(o_.op_timeout);
      gloo::allreduce(opts);
    } catch (const std::exception& e) {
      fail("allreduce", "bucket " + std::to_string(bi + 1) + "/" + std::to_string(buckets.size()) + " (" +
                            megabytes(b.bytes) + ") failed: " + gloo_reason(e) + hint(gloo_reason(e), "allreduce"));
    }
    if (b.count > 1) {
      const char* p = scratch_.data();
      for (size_t i = b.first; i < b.first + b.count; i++) { std::memcpy(xs[i]->raw(), p, xs[i]->nbytes()); p += xs[i]->nbytes(); }
    }
  }
}

void ProcessGroup::allreduce_sum(double* xs, size_t n) {
  check_usable("allreduce");
  if (n == 0) return;
  try {
    gloo::AllreduceOptions opts(ctx_);
    opts.setOutput(xs, n);
    opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<double>));
    opts.setTag(tag_++);
    opts.setTimeout(o_.op_timeout);
    gloo::allreduce(opts);
  } catch (const std::exception& e) {
    fail("allreduce", "of " + std::to_string(n) + " numbers failed: " + gloo_reason(e) + hint(gloo_reason(e), "allreduce"));
  }
}

void ProcessGroup::broadcast(const std::vector<Tensor*>& xs, int root, size_t bucket_bytes) {
  check_usable("broadcast");
  auto buckets = plan(xs, bucket_bytes);
  for (size_t bi = 0; bi < buckets.size(); bi++) {
    const Bucket& b = buckets[bi];
    uint8_t* buf;
    if (b.count == 1) {
      buf = static_cast<uint8_t*>(xs[b.first]->raw());
    } else {
      scratch_.resize(b.bytes);
      if (o_.rank == root) {
        char* p = scratch_.data();
        for (size_t i = b.first; i < b.first + b.count; i++) { std::memcpy(p, xs[i]->raw(), xs[i]->nbytes()); p += xs[i]->nbytes(); }
      }
      buf = reinterpret_cast<uint8_t*>(scratch_.data());
    }
    try {
      gloo::BroadcastOptions opts(ctx_);
      opts.setOutput(buf, b.bytes);
      opts.setRoot(root);
      opts.setTag(tag_++);
      opts.setTimeout(o_.op_timeout);
      gloo::broadcast(opts);
    } catch (const std::exception& e) {
      fail("broadcast", "bucket " + std::to_string(bi + 1) + "/" + std::to_string(buckets.size()) + " (" +
                            megabytes(b.bytes) + ") from rank " + std::to_string(root) + " failed: " + gloo_reason(e) + hint(gloo_reason(e), "broadcast"));
    }
    if (b.count > 1 && o_.rank != root) {
      const char* p = scratch_.data();
      for (size_t i = b.first; i < b.first + b.count; i++) { std::memcpy(xs[i]->raw(), p, xs[i]->nbytes()); p += xs[i]->nbytes(); }
    }
  }
}

void ProcessGroup::barrier() {
  check_usable("barrier");
  try {
    gloo::BarrierOptions opts(ctx_);
    opts.setTag(tag_++);
    opts.setTimeout(o_.op_timeout);
    gloo::barrier(opts);
  } catch (const std::exception& e) {
    fail("barrier", gloo_reason(e) + hint(gloo_reason(e), "barrier"));
  }
}

void ProcessGroup::store_set(const std::string& key, const std::string& value) {
  check_usable("storeSet");
  try {
    store_->set("owlet/user/" + key, std::vector<char>(value.begin(), value.end()));
  } catch (const std::exception& e) {
    fail("storeSet", e.what());
  }
}

std::string ProcessGroup::store_get(const std::string& key, std::chrono::milliseconds timeout) {
  check_usable("storeGet");
  try {
    auto v = store_->get("owlet/user/" + key, timeout);
    return std::string(v.begin(), v.end());
  } catch (const StoreTimeout& e) {
    fail("storeGet", std::string(e.what()) + " (the rank that sets it did not get there)");
  } catch (const std::exception& e) {
    fail("storeGet", e.what());
  }
}

void ProcessGroup::close() {
  ctx_.reset();
  store_.reset();
  if (server_) server_->stop();
  server_.reset();
}

}  // namespace owlet::dist
