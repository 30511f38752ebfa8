// Argument checks shared by the gloo (CPU addon) and NCCL (CUDA addon) collective bindings.
#pragma once
#include <set>
#include <string>
#include <vector>

#include "../binding/args.h"

namespace owlet::dist {

// The tensors of one collective: each on the device `where` accepts (it reports why not), f32 when asked, and each
// storage once (a storage listed twice would be reduced twice).
template <class Where>
std::vector<Tensor*> collective_tensors(Args& a, size_t i, bool f32_only, Where where) {
  std::vector<Tensor*> xs = a.tensors(i, "tensors");
  std::set<const Storage*> seen;
  for (size_t j = 0; j < xs.size(); j++) {
    const ArgName name("tensors", j);
    std::string why = where(*xs[j]);
    OWLET_CHECK(a, why.empty(), ErrorKind::Device, name.str() + " is " + xs[j]->describe() + ": " + why);
    if (f32_only) a.expect_dtype(*xs[j], name, DType::F32);
    OWLET_CHECK(a, seen.insert(xs[j]->storage.get()).second, ErrorKind::Argument, name.str() + " shares its storage with an earlier entry");
  }
  return xs;
}

inline size_t bucket_bytes(Args& a, size_t i) {
  int64_t b = a.integer_or(i, "bucketBytes", 25 << 20);
  OWLET_CHECK(a, b >= 4, ErrorKind::Argument, "bucketBytes must be >= 4, got " + std::to_string(b));
  return size_t(b);
}

}  // namespace owlet::dist
