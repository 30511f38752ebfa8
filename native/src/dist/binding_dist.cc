// Bindings of the CPU addon's process group (one per process) and of a standalone rendezvous store server (what
// `owlet launch` hosts). Arguments are checked here; the work is in process_group.cc / store_server.cc.
#include <map>
#include <memory>
#include <set>

#include "../binding/registry.h"
#include "collective_args.h"
#include "process_group.h"

using namespace owlet;
using namespace owlet::dist;

namespace {

// Deliberately never destroyed: at process exit gloo's pairs and the server's threads must not be torn down by static
// destructors (a joinable std::thread there aborts the process). distClose() ends them explicitly.
ProcessGroup* g_group = nullptr;
std::map<int, StoreServer*>& servers() {
  static auto* m = new std::map<int, StoreServer*>();
  return *m;
}

ProcessGroup& group(Args& a) {
  OWLET_CHECK(a, g_group != nullptr, ErrorKind::Distributed,
          "no process group: call initProcessGroup() first (distInit), or it was closed");
  return *g_group;
}

std::chrono::milliseconds millis(Args& a, size_t i, const char* what) {
  int64_t ms = a.integer(i, what);
  OWLET_CHECK(a, ms > 0, ErrorKind::Argument, std::string(what) + " must be > 0 ms, got " + std::to_string(ms));
  return std::chrono::milliseconds(ms);
}

// CPU tensors only: gloo reduces host memory.
std::vector<Tensor*> cpu_tensors(Args& a, size_t i, bool f32_only) {
  return collective_tensors(a, i, f32_only, [](const Tensor& t) {
    return t.device().kind == DeviceKind::CPU ? std::string() : std::string("gloo collectives take CPU tensors");
  });
}

}  // namespace

// distInit(rank, worldSize, masterAddr, masterPort, hostStore, rendezvousTimeoutMs, opTimeoutMs, iface?) -> the
// store's port (the one this process hosts when hostStore, which may have been 0: ephemeral).
OWLET_OP(distInit) {
  OWLET_CHECK(a, g_group == nullptr, ErrorKind::Distributed, "the process group is already initialised");
  GroupOptions o;
  o.size = int(a.integer(1, "worldSize"));
  o.rank = int(a.integer(0, "rank"));
  OWLET_CHECK(a, o.size >= 1, ErrorKind::Argument, "worldSize must be >= 1, got " + std::to_string(o.size));
  OWLET_CHECK(a, o.rank >= 0 && o.rank < o.size, ErrorKind::Argument,
          "rank must be in [0, " + std::to_string(o.size) + "), got " + std::to_string(o.rank));
  o.master_addr = a.string(2, "masterAddr");
  OWLET_CHECK(a, !o.master_addr.empty(), ErrorKind::Argument, "masterAddr is empty");
  o.master_port = int(a.integer(3, "masterPort"));
  o.host_store = a.boolean(4, "hostStore");
  OWLET_CHECK(a, o.master_port >= (o.host_store ? 0 : 1) && o.master_port <= 65535, ErrorKind::Argument,
          "masterPort must be in [1, 65535], got " + std::to_string(o.master_port));
  o.rendezvous_timeout = millis(a, 5, "rendezvousTimeoutMs");
  o.op_timeout = millis(a, 6, "opTimeoutMs");
  if (a.present(7)) o.iface = a.string(7, "iface");
  g_group = new ProcessGroup(o);
  return a.ret_number(g_group->hosted_port() ? g_group->hosted_port() : o.master_port);
}

// distAllReduce(tensors, bucketBytes?): sums f32 CPU tensors across ranks in place (the caller divides for a mean).
OWLET_OP(distAllReduce) {
  ProcessGroup& g = group(a);
  auto xs = cpu_tensors(a, 0, true);
  g.allreduce_sum(xs, bucket_bytes(a, 1));
  return a.env().Undefined();
}

// distAllReduceNumbers(Float64Array): sums in place across ranks.
OWLET_OP(distAllReduceNumbers) {
  ProcessGroup& g = group(a);
  Napi::Value v = a.raw(0);
  OWLET_CHECK(a, v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float64_array, ErrorKind::Argument,
          "xs (argument 0) must be a Float64Array");
  auto arr = v.As<Napi::Float64Array>();
  g.allreduce_sum(arr.Data(), arr.ElementLength());
  return a.env().Undefined();
}

// distBroadcast(tensors, root, bucketBytes?): root's values into every rank's tensors (any dtype).
OWLET_OP(distBroadcast) {
  ProcessGroup& g = group(a);
  auto xs = cpu_tensors(a, 0, false);
  int64_t root = a.integer(1, "root");
  OWLET_CHECK(a, root >= 0 && root < g.size(), ErrorKind::Argument,
          "root must be in [0, " + std::to_string(g.size()) + "), got " + std::to_string(root));
  g.broadcast(xs, int(root), bucket_bytes(a, 2));
  return a.env().Undefined();
}

OWLET_OP(distBarrier) {
  group(a).barrier();
  return a.env().Undefined();
}

// distStoreSet(key, value) / distStoreGet(key, timeoutMs) -> value: small strings through the rendezvous store.
OWLET_OP(distStoreSet) {
  ProcessGroup& g = group(a);
  g.store_set(a.string(0, "key"), a.string(1, "value"));
  return a.env().Undefined();
}

OWLET_OP(distStoreGet) {
  ProcessGroup& g = group(a);
  std::string v = g.store_get(a.string(0, "key"), millis(a, 1, "timeoutMs"));
  return Napi::String::New(a.env(), v);
}

OWLET_OP(distClose) {
  if (g_group) {
    g_group->close();
    delete g_group;
    g_group = nullptr;
  }
  return a.env().Undefined();
}

// storeServerStart(bindHost, port) -> port: a rendezvous store on its own threads ('' binds every interface; port 0
// picks a free one). storeServerStop(port).
OWLET_OP(storeServerStart) {
  std::string host = a.string(0, "bindHost");
  int64_t port = a.integer(1, "port");
  OWLET_CHECK(a, port >= 0 && port <= 65535, ErrorKind::Argument, "port must be in [0, 65535], got " + std::to_string(port));
  StoreServer* s;
  try {
    s = new StoreServer(host, int(port));
  } catch (const SocketError& e) {
    a.error(ErrorKind::Distributed, std::string("cannot host the rendezvous store: ") + e.what() +
                                        " (is another run using this --master-port?)");
  }
  servers()[s->port()] = s;
  return a.ret_number(s->port());
}

OWLET_OP(storeServerStop) {
  int port = int(a.integer(0, "port"));
  auto it = servers().find(port);
  OWLET_CHECK(a, it != servers().end(), ErrorKind::Argument, "no store server of this process listens on port " + std::to_string(port));
  it->second->stop();
  delete it->second;
  servers().erase(it);
  return a.env().Undefined();
}
