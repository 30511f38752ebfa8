#include "nccl_group.h"

#include <cstring>
#include <thread>

#include "../../cuda/runtime.h"
#include "../store_client.h"

namespace owlet::dist {

namespace {

using Clock = std::chrono::steady_clock;
const char* kIdKey = "owlet/nccl/id";

Device cuda_device(int index) { return Device{DeviceKind::CUDA, index}; }

struct Bucket { size_t first, count, bytes; };

std::vector<Bucket> plan(const std::vector<Tensor*>& xs, size_t bucket_bytes) {
  std::vector<Bucket> out;
  for (size_t i = 0; i < xs.size(); i++) {
    size_t b = xs[i]->nbytes();
    if (b == 0) continue;
    if (out.empty() || out.back().bytes + b > bucket_bytes || out.back().first + out.back().count != i) out.push_back({i, 1, b});
    else { out.back().count++; out.back().bytes += b; }
  }
  return out;
}

void pause() { std::this_thread::sleep_for(std::chrono::microseconds(200)); }

}  // namespace

std::string NcclGroup::where() const {
  return "rank " + std::to_string(o_.rank) + " of " + std::to_string(o_.size) + " (NCCL, cuda:" + std::to_string(o_.device) + ")";
}

std::string NcclGroup::reason(ncclResult_t r) const {
  std::string s = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm_);
  if (last && *last) s += std::string(": ") + last;
  return s;
}

void NcclGroup::fail(const std::string& op, const std::string& why) {
  std::string msg = op + " on " + where() + ": " + why;
  if (broken_.empty()) broken_ = msg;
  throw Error(ErrorKind::Distributed, msg);
}

void NcclGroup::check_usable(const char* op) const {
  if (!broken_.empty()) throw Error(ErrorKind::Distributed, std::string(op) + ": the NCCL group is broken since: " + broken_);
  if (!comm_) throw Error(ErrorKind::Distributed, std::string(op) + ": the NCCL group is closed");
}

void NcclGroup::abort() {
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
}

NcclGroup::NcclGroup(const NcclOptions& o) : o_(o) {
  const auto until = Clock::now() + o.rendezvous_timeout;
  ncclUniqueId id;
  try {
    StoreClient store(o.store_host, o.store_port, o.rendezvous_timeout, o.rendezvous_timeout);
    if (o.rank == 0) {
      ncclResult_t r = ncclGetUniqueId(&id);
      if (r != ncclSuccess) fail("rendezvous", std::string("ncclGetUniqueId: ") + ncclGetErrorString(r));
      store.set(kIdKey, std::vector<char>(reinterpret_cast<char*>(&id), reinterpret_cast<char*>(&id) + sizeof id));
    } else {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      auto v = store.get(kIdKey, std::max(left, std::chrono::milliseconds(1)));
      if (v.size() != sizeof id) fail("rendezvous", "NCCL's unique id in the store has " + std::to_string(v.size()) + " bytes");
      std::memcpy(&id, v.data(), sizeof id);
    }
  } catch (const StoreTimeout& e) {
    fail("rendezvous", std::string("rank 0 did not publish NCCL's unique id: ") + e.what());
  } catch (const SocketError& e) {
    fail("rendezvous", e.what());
  }
  cuda::context(cuda_device(o.device));  // makes the device current and creates its stream
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so that a rank that never joins cannot hang this one past the timeout
  ncclResult_t r = ncclCommInitRankConfig(&comm_, o.size, id, o.rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    std::string why = reason(r);
    abort();
    fail("rendezvous", "ncclCommInitRankConfig: " + why);
  }
  for (;;) {
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm_, &state);
    if (state == ncclSuccess) break;
    if (state != ncclInProgress) {
      std::string why = reason(state);
      abort();
      fail("rendezvous", "joining the NCCL communicator: " + why);
    }
    if (Clock::now() > until) {
      abort();
      fail("rendezvous", "joining the NCCL communicator timed out after " + std::to_string(o.rendezvous_timeout.count() / 1000) +
                             " s (a rank did not join)");
    }
    pause();
  }
}

NcclGroup::~NcclGroup() { close(); }

void NcclGroup::close() {
  if (!comm_) return;
  if (broken_.empty()) ncclCommDestroy(comm_);
  else ncclCommAbort(comm_);
  comm_ = nullptr;
}

void NcclGroup::enqueue(const char* op, ncclResult_t r, Clock::time_point until) {
  if (r == ncclSuccess) return;
  if (r != ncclInProgress) {
    std::string why = reason(r);
    abort();
    fail(op, why);
  }
  for (;;) {
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm_, &state);
    if (state == ncclSuccess) return;
    if (state != ncclInProgress || Clock::now() > until) {
      std::string why = state != ncclInProgress ? reason(state) : "timed out queuing the operation";
      abort();
      fail(op, why);
    }
    pause();
  }
}

void NcclGroup::wait_stream(const char* op, Clock::time_point until) {
  auto& c = cuda::context(cuda_device(o_.device));
  for (;;) {
    cudaError_t e = cudaStreamQuery(c.stream);
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) cuda::check(e, op, "cudaStreamQuery");
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm_, &state);
    if (state != ncclSuccess && state != ncclInProgress) {
      std::string why = reason(state);
      abort();
      fail(op, why + " (another rank exited or crashed: see its own error)");
    }
    if (Clock::now() > until) {
      abort();
      fail(op, "timed out after " + std::to_string(o_.op_timeout.count() / 1000) + " s (another rank did not join this " + op +
                   " in time: it may have stopped, be stuck, or be in a different collective)");
    }
    pause();
  }
}

void NcclGroup::allreduce_sum(const std::vector<Tensor*>& xs, size_t bucket_bytes) {
  check_usable("allreduce");
  const auto until = Clock::now() + o_.op_timeout;
  auto& c = cuda::context(cuda_device(o_.device));
  std::vector<Tensor> scratch;  // kept until the stream is done with them
  for (const Bucket& b : plan(xs, bucket_bytes)) {
    void* buf = xs[b.first]->raw();
    if (b.count > 1) {
      scratch.emplace_back(DType::U8, Shape{int64_t(b.bytes)}, cuda_device(o_.device));
      buf = scratch.back().raw();
      char* p = static_cast<char*>(buf);
      for (size_t i = b.first; i < b.first + b.count; i++) {
        cuda::check(cudaMemcpyAsync(p, xs[i]->raw(), xs[i]->nbytes(), cudaMemcpyDeviceToDevice, c.stream), "allreduce", "pack");
        p += xs[i]->nbytes();
      }
    }
    enqueue("allreduce", ncclAllReduce(buf, buf, b.bytes / sizeof(float), ncclFloat32, ncclSum, comm_, c.stream), until);
    if (b.count > 1) {
      const char* p = static_cast<const char*>(buf);
      for (size_t i = b.first; i < b.first + b.count; i++) {
        cuda::check(cudaMemcpyAsync(xs[i]->raw(), p, xs[i]->nbytes(), cudaMemcpyDeviceToDevice, c.stream), "allreduce", "unpack");
        p += xs[i]->nbytes();
      }
    }
  }
  wait_stream("allreduce", until);
}

void NcclGroup::broadcast(const std::vector<Tensor*>& xs, int root, size_t bucket_bytes) {
  check_usable("broadcast");
  const auto until = Clock::now() + o_.op_timeout;
  auto& c = cuda::context(cuda_device(o_.device));
  std::vector<Tensor> scratch;
  for (const Bucket& b : plan(xs, bucket_bytes)) {
    void* buf = xs[b.first]->raw();
    if (b.count > 1) {
      scratch.emplace_back(DType::U8, Shape{int64_t(b.bytes)}, cuda_device(o_.device));
      buf = scratch.back().raw();
      if (o_.rank == root) {
        char* p = static_cast<char*>(buf);
        for (size_t i = b.first; i < b.first + b.count; i++) {
          cuda::check(cudaMemcpyAsync(p, xs[i]->raw(), xs[i]->nbytes(), cudaMemcpyDeviceToDevice, c.stream), "broadcast", "pack");
          p += xs[i]->nbytes();
        }
      }
    }
    enqueue("broadcast", ncclBroadcast(buf, buf, b.bytes, ncclUint8, root, comm_, c.stream), until);
    if (b.count > 1 && o_.rank != root) {
      const char* p = static_cast<const char*>(buf);
      for (size_t i = b.first; i < b.first + b.count; i++) {
        cuda::check(cudaMemcpyAsync(xs[i]->raw(), p, xs[i]->nbytes(), cudaMemcpyDeviceToDevice, c.stream), "broadcast", "unpack");
        p += xs[i]->nbytes();
      }
    }
  }
  wait_stream("broadcast", until);
}

}  // namespace owlet::dist
