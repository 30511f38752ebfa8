// Bindings: rotary position embedding on [B, T, H, D] (HF rotate-half), forward and backward.
#include <cmath>

#include "../core/kernels.h"
#include "registry.h"

using namespace owlet;

namespace {

struct RopeArgs {
  int64_t pos0;
  double theta;
};

RopeArgs check(Args& a, const Tensor& x, const char* name) {
  a.expect_float(x, name);
  OWLET_CHECK(a, x.ndim() == 4, ErrorKind::Shape, std::string(name) + " must be [B, T, H, D], got " + x.describe());
  OWLET_CHECK(a, x.dim(3) > 0 && x.dim(3) % 2 == 0, ErrorKind::Shape,
          std::string("the head dimension D must be even and > 0 (rotate-half pairs its two halves), got ") +
              name + " " + x.describe());
  int64_t pos0 = a.integer(1, "pos0");
  OWLET_CHECK(a, pos0 >= 0 && pos0 + x.dim(1) <= (int64_t(1) << 31), ErrorKind::Argument,
          "positions pos0.." + std::string("pos0+T-1 must lie in [0, 2^31), got pos0 = ") + std::to_string(pos0) +
              " for " + name + " " + x.describe());
  double theta = a.number(2, "theta");
  OWLET_CHECK(a, std::isfinite(theta) && theta > 0, ErrorKind::Argument,
          "theta must be a finite number > 0, got " + std::to_string(theta));
  return {pos0, theta};
}

}  // namespace

// ropeForward(x, pos0, theta) -> x rotated at positions pos0 + t
OWLET_OP(ropeForward) {
  Tensor& x = a.tensor(0, "x");
  RopeArgs r = check(a, x, "x");
  Tensor y = a.like(x);
  kern::rope_fwd(x, y, r.pos0, r.theta);
  return a.ret(std::move(y));
}

// ropeBackward(gy, pos0, theta) -> gy rotated back (the rotation's transpose)
OWLET_OP(ropeBackward) {
  Tensor& gy = a.tensor(0, "gy");
  RopeArgs r = check(a, gy, "gy");
  Tensor gx = a.like(gy);
  kern::rope_bwd(gy, gx, r.pos0, r.theta);
  return a.ret(std::move(gx));
}
