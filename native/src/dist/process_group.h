// A process group over gloo for CPU tensors: rendezvous through the TCP store, then a full mesh of TCP pairs.
//
// Collectives run in the calling thread and block it; each is bounded by the group's operation timeout. Lists of
// tensors are bucketed: consecutive tensors are packed into one flat buffer of about `bucket_bytes` and reduced or
// broadcast with one gloo call per bucket (a tensor larger than a bucket goes alone, without a copy). After any
// failure (a timeout, a peer that exited) the group is broken: gloo's pairs are in an unknown state, so every later
// call fails at once with the first error.
#pragma once
#include <gloo/context.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "../core/tensor.h"
#include "store_client.h"
#include "store_server.h"

namespace owlet::dist {

struct GroupOptions {
  int rank = 0;
  int size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // This process hosts the store (rank 0 when no launcher does: torchrun, srun).
  bool host_store = false;
  std::chrono::milliseconds rendezvous_timeout{300000};
  std::chrono::milliseconds op_timeout{1800000};
  // Network interface for gloo's pairs (GLOO_SOCKET_IFNAME); empty: the address that routes to the master.
  std::string iface;
};

class ProcessGroup {
 public:
  // Rendezvous and connect; throws owlet::Error(Distributed) naming the ranks that did not arrive in time.
  explicit ProcessGroup(const GroupOptions& o);

  int rank() const { return o_.rank; }
  int size() const { return o_.size; }
  // The store's port when this process hosts it (0 otherwise).
  int hosted_port() const { return server_ ? server_->port() : 0; }
  const std::string& broken() const { return broken_; }

  // Sums f32 CPU tensors across ranks, in place.
  void allreduce_sum(const std::vector<Tensor*>& xs, size_t bucket_bytes);
  // Sums doubles across ranks, in place (a few step statistics; one gloo call).
  void allreduce_sum(double* xs, size_t n);
  // Copies root's tensors into every rank's (any dtype: the bytes are broadcast).
  void broadcast(const std::vector<Tensor*>& xs, int root, size_t bucket_bytes);
  void barrier();
  void store_set(const std::string& key, const std::string& value);
  std::string store_get(const std::string& key, std::chrono::milliseconds timeout);
  // Ends the group: closes the pairs and the store (and stops the hosted server).
  void close();

 private:
  struct Bucket { size_t first, count, bytes; };
  static std::vector<Bucket> plan(const std::vector<Tensor*>& xs, size_t bucket_bytes);
  [[noreturn]] void fail(const std::string& what, const std::string& why);
  void check_usable(const char* op) const;
  std::string where() const;

  GroupOptions o_;
  std::unique_ptr<StoreServer> server_;
  std::unique_ptr<StoreClient> store_;
  std::shared_ptr<gloo::Context> ctx_;
  std::vector<char> scratch_;
  std::string broken_;
  uint32_t tag_ = 0;
};

}  // namespace owlet::dist
