// Tickets of the copies to the host that kern::read_queue queued (native/src/cpu/tensor.cc, native/src/cuda/
// queued_read.cc): what each backend keeps per ticket (Slot) until read_take or read_drop claims it. A ticket is
// claimed once; an unknown or already claimed one is an argument error, and at most kMaxOpen stay unclaimed (each
// holds host memory, pinned on a GPU: a caller that never claims its reads fails loudly instead of leaking).
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>

#include "errors.h"

namespace owlet {

template <class Slot>
class QueuedReads {
 public:
  static constexpr size_t kMaxOpen = 4096;

  // Throws before anything is queued when no ticket is left.
  void check_room(const char* op) const {
    if (open_.size() >= kMaxOpen)
      throw Error(ErrorKind::Argument, std::string(op) + ": " + std::to_string(kMaxOpen) +
                                           " queued reads were never taken or dropped (readTake / readDrop each ticket)");
  }
  uint64_t add(Slot s) {
    const uint64_t t = next_++;
    open_.emplace(t, std::move(s));
    return t;
  }
  Slot claim(uint64_t ticket, const char* op) {
    auto it = open_.find(ticket);
    if (it == open_.end())
      throw Error(ErrorKind::Argument, std::string(op) + ": ticket " + std::to_string(ticket) +
                                           " is not a queued read of this backend (never queued, or already taken or dropped)");
    Slot s = std::move(it->second);
    open_.erase(it);
    return s;
  }
  size_t open() const { return open_.size(); }

 private:
  std::unordered_map<uint64_t, Slot> open_;
  uint64_t next_ = 1;
};

}  // namespace owlet
