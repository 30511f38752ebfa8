// A process group over NCCL for CUDA tensors (part of the CUDA addon). Rank 0 creates NCCL's unique id and publishes
// it through the same rendezvous store gloo uses; every rank then joins a non-blocking communicator on its device.
//
// Collectives are queued on the device's one stream (after the kernels that produced the gradients) and the call
// waits for them, polling the stream and NCCL's asynchronous error state; past the operation timeout, or when NCCL
// reports a failure (a peer gone), the communicator is aborted and the call throws Error(Distributed) naming the op
// and the rank. Buckets as in the gloo group: consecutive tensors packed into a device buffer of ~bucket_bytes.
//
// Not yet run on more than one GPU: see the README's multi-GPU section.
#pragma once
#include <nccl.h>

#include <chrono>
#include <string>
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
  void close();

 private:
  std::string where() const;
  [[noreturn]] void fail(const std::string& op, const std::string& why);
  void check_usable(const char* op) const;
  // Runs an NCCL call; a non-blocking communicator may answer ncclInProgress, then waits until it is queued.
  void enqueue(const char* op, ncclResult_t r, std::chrono::steady_clock::time_point until);
  // Waits until the device's stream has finished what was queued, or fails (timeout, NCCL error).
  void wait_stream(const char* op, std::chrono::steady_clock::time_point until);
  void abort();
  std::string reason(ncclResult_t r) const;

  NcclOptions o_;
  ncclComm_t comm_ = nullptr;
  std::string broken_;
};

}  // namespace owlet::dist
