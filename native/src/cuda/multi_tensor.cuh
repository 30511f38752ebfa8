// Multi-tensor launches: one kernel over a whole list of tensors (the optimizer's lists, the working copies of a
// layer's weights). Each block takes one (tensor, chunk) work item; the slot table and the items are uploaded with one
// queued copy, so a list of hundreds of tensors costs one launch and one small upload instead of one launch each.
#pragma once
#include <cstring>
#include <vector>

#include "common.cuh"
#include "staging.h"

namespace owlet::cuda {

constexpr int64_t kChunk = 32768;  // elements per block

struct WorkItem {
  int32_t slot;
  int64_t start;
};

// Copies the slot table and the work items to the device (one queued upload; pageable host memory is staged before
// cudaMemcpyAsync returns, so the vectors may die at once). Returns the device pointers into `hold`.
template <class S>
void upload_tables(DeviceContext& c, const std::vector<S>& slots, const std::vector<WorkItem>& items, Tensor& hold,
                   const S** dslots, const WorkItem** ditems, const char* op) {
  size_t sb = slots.size() * sizeof(S), sb_pad = (sb + 15) / 16 * 16, ib = items.size() * sizeof(WorkItem);
  std::vector<uint8_t> host(sb_pad + ib);
  std::memcpy(host.data(), slots.data(), sb);
  std::memcpy(host.data() + sb_pad, items.data(), ib);
  hold = Tensor(DType::U8, {int64_t(host.size())}, Device{DeviceKind::CUDA, c.index});
  copy_to_device(c, hold.raw(), host.data(), host.size(), op);
  *dslots = reinterpret_cast<const S*>(hold.data<uint8_t>());
  *ditems = reinterpret_cast<const WorkItem*>(hold.data<uint8_t>() + sb_pad);
}

template <class S>
std::vector<WorkItem> work_items(const std::vector<S>& slots) {
  std::vector<WorkItem> items;
  for (size_t i = 0; i < slots.size(); i++)
    for (int64_t s = 0; s < slots[i].n; s += kChunk) items.push_back({int32_t(i), s});
  return items;
}

}  // namespace owlet::cuda
