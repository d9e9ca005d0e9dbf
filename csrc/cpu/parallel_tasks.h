// Independent tasks on ATen's thread pool, with single-threaded BLAS inside every task.
//
// at::parallel_for runs a range shorter than the thread count inline, outside any OpenMP parallel
// region, where MKL may split a GEMM over the idle threads; results then depend on the thread count
// at the last-ulp level. Padding the range to the thread count keeps every task inside the pool's
// parallel region, where BLAS runs sequentially, exactly as it does with one thread.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace fastmi {

template <typename F>
void parallel_tasks(int64_t count, const F& f) {
  const int64_t range = std::max<int64_t>(count, at::get_num_threads());
  at::parallel_for(0, range, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < std::min(end, count); ++t) f(t);
  });
}

}  // namespace fastmi
