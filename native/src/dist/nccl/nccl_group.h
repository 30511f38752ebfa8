// A process group over NCCL for CUDA tensors (part of the CUDA addon). Rank 0 creates NCCL's unique id and publishes
// it through the same rendezvous store gloo uses; every rank then joins a non-blocking communicator on its device.
//
// Collectives are queued on the device's one stream (after the kernels that produced the gradients) and the call
// waits for them, polling the stream and NCCL's asynchronous error state; past the operation timeout, or when NCCL
// reports a failure (a peer gone), the communicator is aborted and the call throws Error(Distributed) naming the op
// and the rank. Buckets as in the gloo group: consecutive tensors packed into a device buffer of ~bucket_bytes.
//
// Overlapped all-reduce (the gradient buckets of lib/dist/grad-reducer.ts): allreduce_start() queues a bucket's sum
// on the group's own communication stream, behind an event recorded on the compute stream (so it reads the gradients
// the kernels queued so far produce), and returns at once while the backward goes on queuing kernels.
// allreduce_wait() makes the compute stream wait for the bucket's done event: no host synchronisation. The bucket's
// tensors (and its packing buffer) are held until then: after it, every later use of those blocks by the caching
// allocator's next owner is queued on the compute stream behind the wait, so nothing is reused while NCCL reads it.
// A watchdog thread watches the started buckets: when one outlives the operation timeout or NCCL reports an
// asynchronous error, it aborts the communicator (so the streams waiting for it move on) and posts the failure to the
// CUDA runtime, which raises it at the device's next synchronisation (cuda::post_async_failure).
//
// Not yet run on more than one GPU: see the README's multi-GPU section.
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../../core/tensor.h"

namespace owlet::dist {

struct NcclOptions {
  int rank = 0;
  int size = 1;
  std::string store_host;
  int store_port = 0;
  int device = 0;
  std::chrono::milliseconds rendezvous_timeout{300000};
  std::chrono::milliseconds op_timeout{1800000};
};

class NcclGroup {
 public:
  explicit NcclGroup(const NcclOptions& o);
  ~NcclGroup();
  int rank() const { return o_.rank; }
  int size() const { return o_.size; }
  int device() const { return o_.device; }

  void allreduce_sum(const std::vector<Tensor*>& xs, size_t bucket_bytes);
  void broadcast(const std::vector<Tensor*>& xs, int root, size_t bucket_bytes);
  // Starts summing the f32 tensors (one bucket: packed when several) across ranks on the communication stream;
  // returns a ticket for allreduce_wait.
  uint64_t allreduce_start(const std::vector<Tensor*>& xs);
  // The compute stream waits for that sum; the bucket's buffers are released.
  void allreduce_wait(uint64_t ticket);
  // Started buckets not yet waited for.
  size_t in_flight();
  void close();

 private:
  using Clock = std::chrono::steady_clock;
  using Lock = std::unique_lock<std::mutex>;
  struct InFlight {
    std::vector<Tensor> hold;  // the bucket's tensors and packing buffer
    cudaEvent_t done = nullptr;
  };
  struct Watched {
    cudaEvent_t done = nullptr;
    Clock::time_point deadline;
    bool waited = false;  // the event may be destroyed once it completed and nobody waits on it any more
  };

  std::string where() const;
  [[noreturn]] void fail(const std::string& op, const std::string& why);
  void check_usable(const char* op) const;
  // Runs an NCCL call; a non-blocking communicator may answer ncclInProgress, then waits until it is queued.
  void enqueue(const char* op, ncclResult_t r, Clock::time_point until, Lock& lock);
  // Waits until `stream` has finished what was queued, or fails (timeout, NCCL error).
  void wait_stream(const char* op, cudaStream_t stream, Clock::time_point until, Lock& lock);
  void abort();
  std::string reason(ncclResult_t r) const;
  // Creates the communication stream, its event and the watchdog on the first overlapped all-reduce.
  void start_overlap();
  void watchdog();

  NcclOptions o_;
  ncclComm_t comm_ = nullptr;
  std::string broken_;
  // Guards everything below and every use of comm_ (the watchdog may abort it from its thread).
  std::mutex mu_;
  cudaStream_t comm_stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;  // recorded on the compute stream; the communication stream waits for it
  std::map<uint64_t, InFlight> in_flight_;
  std::map<uint64_t, Watched> watched_;
  std::vector<std::vector<Tensor>> graveyard_;  // buffers of buckets abandoned after a failure: never reused
  uint64_t next_ticket_ = 1;
  std::thread watchdog_;
  std::condition_variable wake_;
  bool stopping_ = false;
};

}  // namespace owlet::dist
