// SPDX-License-Identifier: Apache-2.0
/// @file threads.hpp
/// @brief Threads of the CPU codecs.
///
/// Large encodes, decodes and decode-reduces of the CPU codecs (and of the host sessions, which
/// use them) split their buffer into pieces at fixed element boundaries and run the pieces on a
/// small persistent pool of worker threads plus the calling thread. The pieces do not depend on
/// the number of threads, so payloads and decoded values are bit-identical for every setting.
/// Buffers below about a megabyte run on the calling thread alone.
///
/// The pool is shared by every thread of the process (for example the thread ranks of a local
/// communicator): a call uses at most cpu_threads() threads, its own included, and fewer when
/// the workers are busy with other calls.
#pragma once

namespace gcomp {

/// Number of threads one codec call may use (>= 1). The default is the environment variable
/// GCOMP_CPU_THREADS when it is set (docs/environment.md), else the number of CPUs this process may
/// run on (sched_getaffinity), at most 16.
/// @throws gcomp::Error gcompErrorInvalidArgument when GCOMP_CPU_THREADS is set to anything but an
///         integer in 1..256 and set_cpu_threads() has not set a count.
[[nodiscard]] int cpu_threads();

/// Sets the number of threads of later codec calls; 0 restores the default. Workers are started
/// on first use. Safe to call from any thread; calls already running keep their setting.
/// @throws gcomp::Error gcompErrorInvalidArgument for a negative count or one above 256.
void set_cpu_threads(int num_threads);

}  // namespace gcomp
