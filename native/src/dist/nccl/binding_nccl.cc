// Bindings of the CUDA addon's NCCL process group (one per process). The rendezvous store is the one the gloo group
// of the CPU addon uses (hosted by the launcher or by rank 0); this addon only reads and writes it.
#include <set>

#include "../../binding/registry.h"
#include "../collective_args.h"
#include "nccl_group.h"

using namespace owlet;
using namespace owlet::dist;

namespace {

// Never destroyed by static destructors (see binding_dist.cc); ncclClose() ends it.
NcclGroup* g_nccl = nullptr;

NcclGroup& group(Args& a) {
  OWLET_CHECK(a, g_nccl != nullptr, ErrorKind::Distributed, "no NCCL group: ncclInit first, or it was closed");
  return *g_nccl;
}

// Tensors on this rank's device only.
std::vector<Tensor*> device_tensors(Args& a, const NcclGroup& g, bool f32_only) {
  return collective_tensors(a, 0, f32_only, [&g](const Tensor& t) {
    Device d = t.device();
    return d.kind == DeviceKind::CUDA && d.index == g.device()
               ? std::string()
               : "this rank's NCCL group is on cuda:" + std::to_string(g.device());
  });
}

}  // namespace

// ncclInit(rank, worldSize, storeHost, storePort, device, rendezvousTimeoutMs, opTimeoutMs)
OWLET_OP(ncclInit) {
  OWLET_CHECK(a, g_nccl == nullptr, ErrorKind::Distributed, "the NCCL group is already initialised");
  NcclOptions o;
  o.size = int(a.integer(1, "worldSize"));
  o.rank = int(a.integer(0, "rank"));
  OWLET_CHECK(a, o.size >= 1 && o.rank >= 0 && o.rank < o.size, ErrorKind::Argument,
          "rank " + std::to_string(o.rank) + " is not in a world of " + std::to_string(o.size));
  o.store_host = a.string(2, "storeHost");
  o.store_port = int(a.integer(3, "storePort"));
  OWLET_CHECK(a, o.store_port >= 1 && o.store_port <= 65535, ErrorKind::Argument, "storePort must be in [1, 65535]");
  o.device = int(a.integer(4, "device"));
  OWLET_CHECK(a, o.device >= 0, ErrorKind::Argument, "device must be >= 0");
  int64_t rdzv = a.integer(5, "rendezvousTimeoutMs"), op = a.integer(6, "opTimeoutMs");
  OWLET_CHECK(a, rdzv > 0 && op > 0, ErrorKind::Argument, "timeouts must be > 0 ms");
  o.rendezvous_timeout = std::chrono::milliseconds(rdzv);
  o.op_timeout = std::chrono::milliseconds(op);
  g_nccl = new NcclGroup(o);
  return a.env().Undefined();
}

// ncclAllReduce(tensors, bucketBytes?): sums f32 tensors on this rank's GPU across ranks, in place.
OWLET_OP(ncclAllReduce) {
  NcclGroup& g = group(a);
  auto xs = device_tensors(a, g, true);
  g.allreduce_sum(xs, bucket_bytes(a, 1));
  return a.env().Undefined();
}

// ncclAllReduceStart(tensors) -> ticket: starts summing f32 tensors (one bucket) across ranks on the communication
// stream, behind the work queued so far; returns at once.
OWLET_OP(ncclAllReduceStart) {
  NcclGroup& g = group(a);
  auto xs = device_tensors(a, g, true);
  return a.ret_number(double(g.allreduce_start(xs)));
}

// ncclAllReduceWait(ticket): the compute stream waits for that sum (no host synchronisation).
OWLET_OP(ncclAllReduceWait) {
  NcclGroup& g = group(a);
  int64_t ticket = a.integer(0, "ticket");
  OWLET_CHECK(a, ticket > 0, ErrorKind::Argument, "ticket must be > 0, got " + std::to_string(ticket));
  g.allreduce_wait(uint64_t(ticket));
  return a.env().Undefined();
}

// ncclInFlight() -> started overlapped all-reduces not yet waited for.
OWLET_OP(ncclInFlight) { return a.ret_number(double(group(a).in_flight())); }

// ncclBroadcast(tensors, root, bucketBytes?)
OWLET_OP(ncclBroadcast) {
  NcclGroup& g = group(a);
  auto xs = device_tensors(a, g, false);
  int64_t root = a.integer(1, "root");
  OWLET_CHECK(a, root >= 0 && root < g.size(), ErrorKind::Argument, "root must be in [0, " + std::to_string(g.size()) + ")");
  g.broadcast(xs, int(root), bucket_bytes(a, 2));
  return a.env().Undefined();
}

OWLET_OP(ncclClose) {
  if (g_nccl) {
    g_nccl->close();
    delete g_nccl;
    g_nccl = nullptr;
  }
  return a.env().Undefined();
}
