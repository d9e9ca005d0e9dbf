// Transparent-huge-page hint for a fresh output that a kernel writes once: with 4 KiB pages its
// first touch costs a page fault per 4 KiB, about as much as the kernel itself for large gradients.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace fastmi {

// Asks for huge pages on the 2 MiB-aligned interior of `t`'s storage; a hint, harmless without THP.
inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = uintptr_t(1) << 21;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t end = begin + uintptr_t(t.numel()) * t.element_size();
  const uintptr_t a = (begin + huge - 1) & ~(huge - 1), b = end & ~(huge - 1);
  if (b > a) madvise(reinterpret_cast<void*>(a), b - a, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

}  // namespace fastmi
