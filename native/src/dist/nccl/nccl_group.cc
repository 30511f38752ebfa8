#include "nccl_group.h"

#include <cstring>
#include <thread>

#include "../../cuda/runtime.h"
#include "../store_client.h"

namespace owlet::dist {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kWatchEvery = std::chrono::milliseconds(10);
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

// Sleeps a moment with the group's lock released (so the watchdog can run).
void pause(std::unique_lock<std::mutex>& lock) {
  lock.unlock();
  std::this_thread::sleep_for(std::chrono::microseconds(200));
  lock.lock();
}

std::string seconds(std::chrono::milliseconds ms) { return std::to_string(ms.count() / 1000) + " s"; }

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
  Lock lock(mu_);
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
      fail("rendezvous", "joining the NCCL communicator timed out after " + seconds(o.rendezvous_timeout) + " (a rank did not join)");
    }
    pause(lock);
  }
}

NcclGroup::~NcclGroup() { close(); }

size_t NcclGroup::in_flight() {
  Lock lock(mu_);
  return in_flight_.size();
}

void NcclGroup::close() {
  Lock lock(mu_);
  // Started buckets finish first (their buffers must outlive NCCL's use of them), unless the group is broken.
  if (comm_stream_ && comm_ && broken_.empty()) {
    try {
      wait_stream("close", comm_stream_, Clock::now() + o_.op_timeout, lock);
    } catch (const Error&) {
    }
  }
  stopping_ = true;
  wake_.notify_all();
  if (watchdog_.joinable()) {
    lock.unlock();
    watchdog_.join();
    lock.lock();
  }
  if (comm_) {
    if (broken_.empty()) ncclCommDestroy(comm_);
    else ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  for (auto& kv : in_flight_) {
    if (broken_.empty()) kv.second.hold.clear();
    else graveyard_.push_back(std::move(kv.second.hold));
  }
  in_flight_.clear();
  for (auto& kv : watched_) cudaEventDestroy(kv.second.done);
  watched_.clear();
  if (ready_) cudaEventDestroy(ready_);
  ready_ = nullptr;
  if (comm_stream_) cudaStreamDestroy(comm_stream_);
  comm_stream_ = nullptr;
}

void NcclGroup::enqueue(const char* op, ncclResult_t r, Clock::time_point until, Lock& lock) {
  if (r == ncclSuccess) return;
  if (r != ncclInProgress) {
    std::string why = reason(r);
    abort();
    fail(op, why);
  }
  for (;;) {
    if (!comm_) fail(op, "the communicator was aborted: " + broken_);
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm_, &state);
    if (state == ncclSuccess) return;
    if (state != ncclInProgress || Clock::now() > until) {
      std::string why = state != ncclInProgress ? reason(state) : "timed out queuing the operation";
      abort();
      fail(op, why);
    }
    pause(lock);
  }
}

void NcclGroup::wait_stream(const char* op, cudaStream_t stream, Clock::time_point until, Lock& lock) {
  for (;;) {
    cudaError_t e = cudaStreamQuery(stream);
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) cuda::check(e, op, "cudaStreamQuery");
    if (!comm_) fail(op, "the communicator was aborted: " + broken_);
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm_, &state);
    if (state != ncclSuccess && state != ncclInProgress) {
      std::string why = reason(state);
      abort();
      fail(op, why + " (another rank exited or crashed: see its own error)");
    }
    if (Clock::now() > until) {
      abort();
      fail(op, "timed out after " + seconds(o_.op_timeout) + " (another rank did not join this " + op +
                   " in time: it may have stopped, be stuck, or be in a different collective)");
    }
    pause(lock);
  }
}

void NcclGroup::allreduce_sum(const std::vector<Tensor*>& xs, size_t bucket_bytes) {
  Lock lock(mu_);
  check_usable("allreduce");
  if (!in_flight_.empty()) {
    throw Error(ErrorKind::Distributed, "allreduce on " + where() + ": called while " + std::to_string(in_flight_.size()) +
                                            " overlapped all-reduce(s) are not waited for (wait for them first)");
  }
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
    enqueue("allreduce", ncclAllReduce(buf, buf, b.bytes / sizeof(float), ncclFloat32, ncclSum, comm_, c.stream), until, lock);
    if (b.count > 1) {
      const char* p = static_cast<const char*>(buf);
      for (size_t i = b.first; i < b.first + b.count; i++) {
        cuda::check(cudaMemcpyAsync(xs[i]->raw(), p, xs[i]->nbytes(), cudaMemcpyDeviceToDevice, c.stream), "allreduce", "unpack");
        p += xs[i]->nbytes();
      }
    }
  }
  wait_stream("allreduce", c.stream, until, lock);
}

void NcclGroup::broadcast(const std::vector<Tensor*>& xs, int root, size_t bucket_bytes) {
  Lock lock(mu_);
  check_usable("broadcast");
  if (!in_flight_.empty()) {
    throw Error(ErrorKind::Distributed, "broadcast on " + where() + ": called while " + std::to_string(in_flight_.size()) +
                                            " overlapped all-reduce(s) are not waited for (wait for them first)");
  }
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
    enqueue("broadcast", ncclBroadcast(buf, buf, b.bytes, ncclUint8, root, comm_, c.stream), until, lock);
    if (b.count > 1 && o_.rank != root) {
      const char* p = static_cast<const char*>(buf);
      for (size_t i = b.first; i < b.first + b.count; i++) {
        cuda::check(cudaMemcpyAsync(xs[i]->raw(), p, xs[i]->nbytes(), cudaMemcpyDeviceToDevice, c.stream), "broadcast", "unpack");
        p += xs[i]->nbytes();
      }
    }
  }
  wait_stream("broadcast", c.stream, until, lock);
}

void NcclGroup::start_overlap() {
  if (comm_stream_) return;
  int least = 0, greatest = 0;
  cuda::check(cudaDeviceGetStreamPriorityRange(&least, &greatest), "allreduce", "cudaDeviceGetStreamPriorityRange");
  // High priority: the reduction's few blocks get scheduled ahead of the backward's kernels when both are ready.
  cuda::check(cudaStreamCreateWithPriority(&comm_stream_, cudaStreamNonBlocking, greatest), "allreduce", "cudaStreamCreate");
  cuda::check(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "allreduce", "cudaEventCreate");
  watchdog_ = std::thread([this] { watchdog(); });
}

uint64_t NcclGroup::allreduce_start(const std::vector<Tensor*>& xs) {
  Lock lock(mu_);
  check_usable("allreduce");
  const auto until = Clock::now() + o_.op_timeout;
  auto& c = cuda::context(cuda_device(o_.device));
  start_overlap();
  InFlight f;
  size_t bytes = 0;
  for (Tensor* t : xs) { f.hold.push_back(*t); bytes += t->nbytes(); }
  try {
    // The communication stream starts after everything queued so far on the compute stream (the gradients).
    cuda::check(cudaEventRecord(ready_, c.stream), "allreduce", "cudaEventRecord");
    cuda::check(cudaStreamWaitEvent(comm_stream_, ready_, 0), "allreduce", "cudaStreamWaitEvent");
    void* buf = xs.empty() ? nullptr : xs[0]->raw();
    if (xs.size() > 1) {
      f.hold.emplace_back(DType::U8, Shape{int64_t(bytes)}, cuda_device(o_.device));
      buf = f.hold.back().raw();
      char* p = static_cast<char*>(buf);
      for (Tensor* t : xs) {
        cuda::check(cudaMemcpyAsync(p, t->raw(), t->nbytes(), cudaMemcpyDeviceToDevice, comm_stream_), "allreduce", "pack");
        p += t->nbytes();
      }
    }
    if (bytes > 0) {
      enqueue("allreduce", ncclAllReduce(buf, buf, bytes / sizeof(float), ncclFloat32, ncclSum, comm_, comm_stream_), until, lock);
    }
    if (xs.size() > 1) {
      const char* p = static_cast<const char*>(buf);
      for (Tensor* t : xs) {
        cuda::check(cudaMemcpyAsync(t->raw(), p, t->nbytes(), cudaMemcpyDeviceToDevice, comm_stream_), "allreduce", "unpack");
        p += t->nbytes();
      }
    }
    cuda::check(cudaEventCreateWithFlags(&f.done, cudaEventDisableTiming), "allreduce", "cudaEventCreate");
    cuda::check(cudaEventRecord(f.done, comm_stream_), "allreduce", "cudaEventRecord");
  } catch (...) {
    // Copies may be queued on the communication stream: its buffers must never be reused.
    graveyard_.push_back(std::move(f.hold));
    if (f.done) cudaEventDestroy(f.done);
    throw;
  }
  uint64_t ticket = next_ticket_++;
  watched_[ticket] = Watched{f.done, until, false};
  in_flight_[ticket] = std::move(f);
  wake_.notify_all();
  return ticket;
}

void NcclGroup::allreduce_wait(uint64_t ticket) {
  Lock lock(mu_);
  auto it = in_flight_.find(ticket);
  if (it == in_flight_.end()) {
    throw Error(ErrorKind::Argument, "allreduce: no overlapped all-reduce " + std::to_string(ticket) + " in flight (waited for twice?)");
  }
  InFlight f = std::move(it->second);
  in_flight_.erase(it);
  if (!broken_.empty()) {
    graveyard_.push_back(std::move(f.hold));
    throw Error(ErrorKind::Distributed, "allreduce: the NCCL group is broken since: " + broken_);
  }
  auto& c = cuda::context(cuda_device(o_.device));
  cuda::check(cudaStreamWaitEvent(c.stream, f.done, 0), "allreduce", "cudaStreamWaitEvent");
  auto w = watched_.find(ticket);
  if (w != watched_.end()) w->second.waited = true;
  // f.hold is released here: whatever reuses these blocks next is queued on the compute stream, behind the wait.
}

void NcclGroup::watchdog() {
  cudaSetDevice(o_.device);
  Lock lock(mu_);
  while (!stopping_) {
    if (watched_.empty()) {
      wake_.wait(lock);
      continue;
    }
    for (auto it = watched_.begin(); it != watched_.end();) {
      Watched& w = it->second;
      cudaError_t e = cudaEventQuery(w.done);
      if (e == cudaSuccess) {
        if (w.waited) {
          cudaEventDestroy(w.done);
          it = watched_.erase(it);
        } else {
          ++it;
        }
        continue;
      }
      std::string why;
      if (e != cudaErrorNotReady) {
        cudaGetLastError();
        why = std::string("the device failed: ") + cudaGetErrorString(e);
      } else if (comm_) {
        ncclResult_t state = ncclSuccess;
        ncclCommGetAsyncError(comm_, &state);
        if (state != ncclSuccess && state != ncclInProgress) {
          why = reason(state) + " (another rank exited or crashed: see its own error)";
        } else if (Clock::now() > w.deadline) {
          why = "an overlapped bucket timed out after " + seconds(o_.op_timeout) +
                " (another rank did not join this allreduce in time: it may have stopped, be stuck, or be in a different collective)";
        }
      }
      if (!why.empty()) {
        std::string msg = "allreduce on " + where() + ": " + why;
        if (broken_.empty()) broken_ = msg;
        abort();  // NCCL's kernels stop, so the streams waiting for them move on
        cuda::post_async_failure(o_.device, msg + "; the gradients of this step are not valid");
        if (e != cudaErrorNotReady) {  // a device error: this event will not complete; stop watching it
          it = watched_.erase(it);
          continue;
        }
      }
      ++it;
    }
    wake_.wait_for(lock, kWatchEvery);
  }
}

}  // namespace owlet::dist
