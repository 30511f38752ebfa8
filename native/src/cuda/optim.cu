// Multi-tensor optimizer kernels: fused AdamW over a whole parameter list in one launch, the global sum of squares
// (float64 partials, fixed-order final sum, one host read), in-place scaling for gradient clipping, and a finiteness
// check. Each launch gets a table of (tensor, chunk) work items, copied to the device with the tensor pointers.
#include <cmath>
#include <cstring>
#include <vector>

#include "../core/clip.h"
#include "../core/kernels.h"
#include "common.cuh"
#include "adamw.cuh"
#include "multi_tensor.cuh"
#include "sum_squares.cuh"

namespace owlet::kern {

using namespace owlet::cuda;
using owlet::cuda::adamw::AdamScalars;
using owlet::cuda::adamw::AdamSlot;
using owlet::cuda::adamw::adamw_kernel;

namespace {

using owlet::cuda::sumsq::kThreads;
using owlet::cuda::sumsq::ListSlot;
using owlet::cuda::sumsq::sum_squares_kernel;

__global__ void sum_partials_kernel(const double* partial, int64_t n, double* out) {
  __shared__ double scratch[32];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  acc = block_sum_d(acc, scratch);
  if (threadIdx.x == 0) *out = acc;
}

// The step control block from the sum of squares' partials (summed as sum_partials_kernel does: the same norm as
// sum_squares) and the losses' finiteness flag (all_finite_kernel's).
__global__ void step_control_kernel(const double* partial, int64_t n, const int* loss_bad, double max_norm,
                                    double* out) {
  __shared__ double scratch[32];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  acc = block_sum_d(acc, scratch);
  if (threadIdx.x == 0) {
    const double norm = sqrt(acc);
    out[0] = norm;
    out[1] = clip_coefficient(norm, max_norm);
    out[2] = isfinite(norm) && *loss_bad == 0 ? 0.0 : 1.0;
  }
}

__global__ void scale_list_kernel(const ListSlot* slots, const WorkItem* items, float s) {
  WorkItem w = items[blockIdx.x];
  ListSlot t = slots[w.slot];
  int64_t end = min(t.n, w.start + kChunk);
  for (int64_t i = w.start + threadIdx.x; i < end; i += blockDim.x) t.x.set(i, t.x.get(i) * s);
}

__global__ void all_finite_kernel(const ListSlot* slots, const WorkItem* items, int* bad) {
  WorkItem w = items[blockIdx.x];
  ListSlot t = slots[w.slot];
  int64_t end = min(t.n, w.start + kChunk);
  bool ok = true;
  for (int64_t i = w.start + threadIdx.x; i < end; i += blockDim.x) ok &= isfinite(t.x.get(i));
  if (!ok) *bad = 1;
}

// The device of a list (all on one device; an empty list has none).
DeviceContext* list_context(const Tensor* first, const char* op) { return first ? &context_of(*first, op) : nullptr; }

std::vector<ListSlot> list_slots(const std::vector<const Tensor*>& xs, const char* op) {
  std::vector<ListSlot> slots;
  for (const Tensor* t : xs) {
    if (t->device() != xs[0]->device())
      fail(ErrorKind::Device, std::string(op) + ": tensors on different devices: " + xs[0]->describe() + ", " + t->describe());
    if (t->numel() > 0)
      slots.push_back({fout(*t, op, "tensor"), t->numel(), vec_enabled() && aligned16(*t)});
  }
  return slots;
}

// A list op's work tables on the device, one block per (tensor, chunk) item; no blocks when the list holds no element.
struct ListTables {
  Tensor hold;  // the uploaded tables; freed after the launch (the caching allocator reuses it only for later work)
  const ListSlot* slots = nullptr;
  const WorkItem* items = nullptr;
  unsigned blocks = 0;
};
ListTables list_tables(DeviceContext& c, const std::vector<const Tensor*>& xs, const char* op) {
  ListTables t;
  std::vector<ListSlot> slots = list_slots(xs, op);
  if (slots.empty()) return t;
  std::vector<WorkItem> items = work_items(slots);
  upload_tables(c, slots, items, t.hold, &t.slots, &t.items, op);
  t.blocks = unsigned(items.size());
  return t;
}

}  // namespace

void adamw(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& m,
           const std::vector<Tensor*>& v, const std::vector<double>& wd, const AdamWHyper& h,
           const std::vector<Tensor*>& copies) {
  const char* op = "adamw";
  if (params.empty()) return;
  DeviceContext& c = context_of(*params[0], op);
  std::vector<AdamSlot> slots;
  for (size_t i = 0; i < params.size(); i++) {
    for (const Tensor* t : {static_cast<const Tensor*>(params[i]), static_cast<const Tensor*>(m[i]),
                            static_cast<const Tensor*>(v[i])}) {
      expect_dtype(*t, DType::F32, op, "params, m and v");
      if (t->device() != params[0]->device())
        fail(ErrorKind::Device, std::string(op) + ": tensors on different devices: " + params[0]->describe() + ", " + t->describe());
    }
    if (params[i]->numel() == 0) continue;
    double t = double(h.step), bc1 = 1.0 - std::pow(h.beta1, t), bc2 = 1.0 - std::pow(h.beta2, t);
    AdamScalars k{float(1.0 - h.lr * wd[i]), float(h.beta1), float(1.0 - h.beta1), float(h.beta2), float(1.0 - h.beta2),
                  float(std::sqrt(bc2)), float(h.eps), float(-(h.lr / bc1)), h.grad_scale};
    Tensor* copy = copies.empty() ? nullptr : copies[i];
    if (copy) {
      expect_dtype(*copy, DType::BF16, op, "copies");
      if (copy->device() != params[0]->device() || copy->numel() != params[i]->numel())
        fail(ErrorKind::Argument, std::string(op) + ": working copy " + copy->describe() + " does not match " + params[i]->describe());
    }
    AdamSlot slot{params[i]->f32(), fin(*grads[i], op, "grads"), m[i]->f32(), v[i]->f32(), params[i]->numel(), k,
                  copy ? copy->data<bf16>() : nullptr, false};
    auto aligned = [](const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
    slot.vec = vec_enabled() && aligned(slot.p, 16) && aligned(slot.m, 16) && aligned(slot.v, 16) &&
               aligned(slot.g.p, slot.g.bf ? 8 : 16) && aligned(slot.copy, 8);
    slots.push_back(slot);
  }
  if (slots.empty()) return;
  std::vector<WorkItem> items = work_items(slots);
  Tensor hold;
  const AdamSlot* ds;
  const WorkItem* di;
  upload_tables(c, slots, items, hold, &ds, &di, op);
  const double* control = nullptr;
  if (h.control) {
    if (h.control->device() != params[0]->device())
      fail(ErrorKind::Device, std::string(op) + ": the control block " + h.control->describe() + " is not on " +
                                  params[0]->device().name());
    control = reinterpret_cast<const double*>(h.control->raw());
  }
  adamw_kernel<<<unsigned(items.size()), kThreads, 0, c.stream>>>(ds, di, control);
  check_launch(op);
}

double sum_squares(const std::vector<const Tensor*>& xs) {
  const char* op = "sumSquares";
  if (xs.empty()) return 0.0;
  DeviceContext& c = *list_context(xs[0], op);
  ListTables t = list_tables(c, xs, op);
  if (!t.blocks) return 0.0;
  Tensor partial(DType::F32, {int64_t(t.blocks) * 2 + 2}, xs[0]->device());  // doubles: items + 1 result
  double* p = reinterpret_cast<double*>(partial.raw());
  sum_squares_kernel<<<t.blocks, kThreads, 0, c.stream>>>(t.slots, t.items, p);
  check_launch(op);
  sum_partials_kernel<<<1, 1024, 0, c.stream>>>(p, int64_t(t.blocks), p + t.blocks);
  check_launch(op);
  double out = 0.0;
  check(cudaMemcpyAsync(&out, p + t.blocks, sizeof(double), cudaMemcpyDeviceToHost, c.stream), op,
        "cudaMemcpyAsync(result)");
  sync(c, op);
  return out;
}

void step_control(const std::vector<const Tensor*>& grads, const std::vector<const Tensor*>& losses, double max_norm,
                  Tensor& out) {
  const char* op = "stepControl";
  DeviceContext& c = context_of(out, op);
  for (const auto* list : {&grads, &losses})
    for (const Tensor* t : *list)
      if (t->device() != out.device())
        fail(ErrorKind::Device, std::string(op) + ": " + t->describe() + " is not on " + out.device().name());
  ListTables g = list_tables(c, grads, op), l = list_tables(c, losses, op);
  // scratch: one double per work item of the gradients (at least one), then the losses' flag
  Tensor scratch(DType::I64, {int64_t(g.blocks) + 2}, out.device());
  double* partial = reinterpret_cast<double*>(scratch.raw());
  int* loss_bad = reinterpret_cast<int*>(partial + g.blocks + 1);
  check(cudaMemsetAsync(scratch.raw(), 0, scratch.nbytes(), c.stream), op, "cudaMemsetAsync");
  if (g.blocks) sum_squares_kernel<<<g.blocks, kThreads, 0, c.stream>>>(g.slots, g.items, partial);
  if (l.blocks) all_finite_kernel<<<l.blocks, kThreads, 0, c.stream>>>(l.slots, l.items, loss_bad);
  step_control_kernel<<<1, 1024, 0, c.stream>>>(partial, int64_t(g.blocks), loss_bad, max_norm,
                                                reinterpret_cast<double*>(out.raw()));
  check_launch(op);
}

void scale_inplace(const std::vector<Tensor*>& xs, float s) {
  const char* op = "scaleInplace";
  if (xs.empty()) return;
  std::vector<const Tensor*> cx(xs.begin(), xs.end());
  DeviceContext& c = *list_context(cx[0], op);
  ListTables t = list_tables(c, cx, op);
  if (!t.blocks) return;
  scale_list_kernel<<<t.blocks, kThreads, 0, c.stream>>>(t.slots, t.items, s);
  check_launch(op);
}

bool all_finite(const std::vector<const Tensor*>& xs) {
  const char* op = "allFinite";
  if (xs.empty()) return true;
  DeviceContext& c = *list_context(xs[0], op);
  ListTables t = list_tables(c, xs, op);
  if (!t.blocks) return true;
  Tensor flag(DType::I32, {1}, xs[0]->device());
  check(cudaMemsetAsync(flag.raw(), 0, sizeof(int), c.stream), op, "cudaMemsetAsync");
  all_finite_kernel<<<t.blocks, kThreads, 0, c.stream>>>(t.slots, t.items, flag.i32());
  check_launch(op);
  int bad = 0;
  check(cudaMemcpyAsync(&bad, flag.raw(), sizeof(int), cudaMemcpyDeviceToHost, c.stream), op, "cudaMemcpyAsync(flag)");
  sync(c, op);
  return bad == 0;
}

}  // namespace owlet::kern
