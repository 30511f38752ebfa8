// Bindings: fused AdamW over a parameter list and the list reductions used for gradient clipping.
#include <cmath>
#include <unordered_set>

#include "../core/kernels.h"
#include "registry.h"

using namespace owlet;

namespace {

// Every tensor of a float dtype the kernels read (expect_float; with `gradients`, bf16 on every backend: gradients
// may be kept in the compute dtype, and sum_squares and AdamW widen them exactly) and on one device; returns them as
// const pointers for the kernels.
std::vector<const Tensor*> float_list(Args& a, const std::vector<Tensor*>& xs, const char* what, bool gradients = false) {
  std::vector<const Tensor*> out;
  out.reserve(xs.size());
  for (size_t i = 0; i < xs.size(); i++) {
    if (gradients) a.expect_gradient(*xs[i], {what, i});
    else a.expect_float(*xs[i], {what, i});
    a.expect_same_device(*xs[0], {what, 0}, *xs[i], {what, i});
    out.push_back(xs[i]);
  }
  return out;
}

}  // namespace

// adamw(params, grads, m, v, weightDecay[], lr, beta1, beta2, eps, step, gradScale?, control?, copies?):
// torch.optim.AdamW's update in place on params, m and v, each gradient read as g·gradScale (default 1: gradient
// clipping's coefficient). All lists have one entry per parameter; step is the 1-based step of every listed parameter.
// control: a stepControl block, read where the update runs: its coefficient is the gradient scale, and a step it says
// to skip updates nothing. copies: one entry per parameter, null or a bf16 tensor of the parameter's size that
// receives the updated parameter rounded to bf16 (its working copy; untouched by a skipped step).
OWLET_OP(adamw) {
  std::vector<Tensor*> ps = a.tensors(0, "params"), gs = a.tensors(1, "grads"), ms = a.tensors(2, "m"),
                       vs = a.tensors(3, "v");
  std::vector<double> wd = a.numbers(4, "weightDecay");
  kern::AdamWHyper h{a.number(5, "lr"), a.number(6, "beta1"), a.number(7, "beta2"), a.number(8, "eps"), a.integer(9, "step")};
  if (a.present(10)) {
    double gs = a.number(10, "gradScale");
    OWLET_CHECK(a, std::isfinite(gs) && gs >= 0, ErrorKind::Argument, "gradScale must be finite and >= 0, got " + std::to_string(gs));
    h.grad_scale = float(gs);
  }
  if (Tensor* control = a.opt_tensor(11, "control")) {
    OWLET_CHECK(a, control->dtype == DType::I64 && control->numel() == 3, ErrorKind::Argument,
            "control must be a stepControl block (i64 [3]), got " + control->describe());
    OWLET_CHECK(a, !a.present(10) || h.grad_scale == 1.0f, ErrorKind::Argument, "give gradScale or control, not both");
    h.control = control;
  }
  size_t n = ps.size();
  OWLET_CHECK(a, gs.size() == n && ms.size() == n && vs.size() == n && wd.size() == n, ErrorKind::Argument,
          "params, grads, m, v and weightDecay must have one entry per parameter, got " + std::to_string(n) + ", " +
              std::to_string(gs.size()) + ", " + std::to_string(ms.size()) + ", " + std::to_string(vs.size()) + ", " +
              std::to_string(wd.size()));
  OWLET_CHECK(a, h.step >= 1, ErrorKind::Argument, "step must be >= 1 (1-based, for bias correction), got " + std::to_string(h.step));
  OWLET_CHECK(a, std::isfinite(h.lr) && h.lr >= 0, ErrorKind::Argument, "lr must be finite and >= 0, got " + std::to_string(h.lr));
  OWLET_CHECK(a, h.beta1 >= 0 && h.beta1 < 1, ErrorKind::Argument, "beta1 must be in [0, 1), got " + std::to_string(h.beta1));
  OWLET_CHECK(a, h.beta2 >= 0 && h.beta2 < 1, ErrorKind::Argument, "beta2 must be in [0, 1), got " + std::to_string(h.beta2));
  OWLET_CHECK(a, std::isfinite(h.eps) && h.eps >= 0, ErrorKind::Argument, "eps must be finite and >= 0, got " + std::to_string(h.eps));
  std::unordered_set<const Storage*> written;  // a storage updated twice (a parameter listed twice, m aliasing v) is a bug
  written.reserve(4 * n);
  for (size_t i = 0; i < n; i++) {
    OWLET_CHECK(a, std::isfinite(wd[i]) && wd[i] >= 0, ErrorKind::Argument,
            ArgName("weightDecay", i).str() + " must be finite and >= 0, got " + std::to_string(wd[i]));
    const Tensor *p = ps[i], *g = gs[i], *m = ms[i], *v = vs[i];
    const ArgName pi("params", i), gi("grads", i), mi("m", i), vi("v", i);
    a.expect_float(*p, pi);
    a.expect_gradient(*g, gi);
    a.expect_float(*m, mi);
    a.expect_float(*v, vi);
    a.expect_same_shape(*p, pi, *g, gi);
    a.expect_same_shape(*p, pi, *m, mi);
    a.expect_same_shape(*p, pi, *v, vi);
    a.expect_same_device(*ps[0], "params[0]", *p, pi);
    a.expect_same_device(*p, pi, *g, gi);
    a.expect_same_device(*p, pi, *m, mi);
    a.expect_same_device(*p, pi, *v, vi);
    for (auto [t, name] : {std::pair{p, &pi}, std::pair{m, &mi}, std::pair{v, &vi}})
      OWLET_CHECK(a, t->numel() == 0 || written.insert(t->storage.get()).second, ErrorKind::Argument,
              name->str() + " shares its storage with another params/m/v entry " + t->describe());
    OWLET_CHECK(a, p->numel() == 0 || g->storage != p->storage, ErrorKind::Argument, gi.str() + " shares its storage with " + pi.str());
  }
  std::vector<Tensor*> copies;
  if (a.present(12)) {
    copies = a.opt_tensors(12, "copies");
    OWLET_CHECK(a, copies.size() == n, ErrorKind::Argument, "copies must have one entry (a tensor or null) per parameter, got " +
                                                         std::to_string(copies.size()) + " for " + std::to_string(n));
    for (size_t i = 0; i < n; i++) {
      Tensor* c = copies[i];
      if (!c) continue;
      const ArgName ci("copies", i), pi("params", i);
      OWLET_CHECK(a, c->dtype == DType::BF16, ErrorKind::DType, ci.str() + " must be bf16, got " + c->describe());
      OWLET_CHECK(a, c->numel() == ps[i]->numel(), ErrorKind::Shape, ci.str() + " " + c->describe() + " must have the size of " +
                                                                  pi.str() + " " + ps[i]->describe());
      a.expect_same_device(*ps[i], pi, *c, ci);
      OWLET_CHECK(a, c->numel() == 0 || written.insert(c->storage.get()).second, ErrorKind::Argument,
              ci.str() + " shares its storage with another params/m/v/copies entry " + c->describe());
    }
  }
  std::vector<const Tensor*> cg(gs.begin(), gs.end());
  kern::adamw(ps, cg, ms, vs, wd, h, copies);
  return a.env().Undefined();
}

// sumSquares(xs) -> Σ x² over every element of every tensor, accumulated in float64 (gradient norms).
OWLET_OP(sumSquares) {
  std::vector<Tensor*> xs = a.tensors(0, "xs");
  return a.ret_number(kern::sum_squares(float_list(a, xs, "xs", true)));
}

// stepControl(grads, losses, maxNorm) -> i64 [3] on the gradients' device holding three float64 values: the global
// L2 norm of the gradients, clipping's coefficient for maxNorm (<= 0: no clipping), and 1 when the step must be
// skipped (the norm or a loss not finite) else 0. Computed without waiting for the device (adamw reads it there).
OWLET_OP(stepControl) {
  std::vector<Tensor*> gs = a.tensors(0, "grads"), ls = a.tensors(1, "losses");
  double max_norm = a.number(2, "maxNorm");
  OWLET_CHECK(a, !std::isnan(max_norm), ErrorKind::Argument, "maxNorm must be a number, got NaN");
  OWLET_CHECK(a, !gs.empty() || !ls.empty(), ErrorKind::Argument, "stepControl needs a gradient or a loss to know its device");
  const Tensor& first = gs.empty() ? *ls[0] : *gs[0];
  std::vector<const Tensor*> cg = float_list(a, gs, "grads", true), cl = float_list(a, ls, "losses");
  for (size_t i = 0; i < cl.size(); i++) a.expect_same_device(first, "grads[0]", *cl[i], {"losses", i});
  Tensor out(DType::I64, {3}, first.device());
  kern::step_control(cg, cl, max_norm, out);
  return a.ret(std::move(out));
}

// scaleInplace(xs, s): x *= s for every tensor (gradient clipping).
OWLET_OP(scaleInplace) {
  std::vector<Tensor*> xs = a.tensors(0, "xs");
  double s = a.number(1, "s");
  float_list(a, xs, "xs");
  kern::scale_inplace(xs, float(s));
  return a.env().Undefined();
}

// allFinite(xs) -> true when no element of any tensor is NaN or ±inf.
OWLET_OP(allFinite) {
  std::vector<Tensor*> xs = a.tensors(0, "xs");
  return Napi::Boolean::New(a.env(), kern::all_finite(float_list(a, xs, "xs")));
}
