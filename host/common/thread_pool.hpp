// SPDX-License-Identifier: Apache-2.0
// The persistent worker pool behind gcomp::cpu_threads() (include/gcomp/threads.hpp).
//
// parallel_for(num_tasks, fn) runs fn(0) .. fn(num_tasks - 1), each exactly once, on the calling
// thread and up to cpu_threads() - 1 pool workers, and returns when all have finished. Tasks are
// claimed in increasing order from a shared counter, so which thread runs a task is arbitrary:
// callers make each task write its own part of the output, and the result does not depend on the
// number of threads. An exception thrown by a task is rethrown on the caller after every task has
// finished (the one of the lowest task index when several throw).
#pragma once

#include <cstdint>
#include <functional>

namespace gcomp::detail {

/// Elements below which a CPU codec call runs on the calling thread alone (the cost of waking a
/// worker, tens of microseconds, is then comparable to the work).
inline constexpr int64_t kParallelMinElems = int64_t{1} << 18;

void parallel_for(int64_t num_tasks, const std::function<void(int64_t)>& fn);

/// Threads a call of num_tasks tasks would use now (for tests and benchmarks).
int parallel_width(int64_t num_tasks);

}  // namespace gcomp::detail
