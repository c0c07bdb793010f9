// SPDX-License-Identifier: Apache-2.0
// Exact selection of the sparse codecs: the first k of n elements in a strict total order given by
// 32-bit order keys (smaller first) with ties to the lower index, returned in increasing index
// order. One parallel pass collects the elements whose key is at most a threshold (candidates),
// then a selection among the candidates finds the k-th; scratch is O(k), never O(n). When the
// threshold leaves fewer than k candidates or too many, a few wider or narrower thresholds are
// tried, and as a last resort an exact radix select on the keys (three histogram passes of
// 2048 bins, then one emitting pass) finds the k-th key with O(1) scratch.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <utility>
#include <vector>

namespace gcomp::detail {

/// std::allocator whose value-initialisation (resize, the size constructor) leaves the elements
/// uninitialised: an index list of k entries is written by pool tasks, which then also take its
/// first-touch page faults in parallel (a zeroing by the calling thread cost about 0.9 ms of
/// serial page faults per top-k 1 % encode at 2^24 elements).
template <class T>
struct UninitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <class U>
  UninitAllocator(const UninitAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    if constexpr (sizeof...(Args) == 0)
      ::new (static_cast<void*>(p)) U;
    else
      ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

/// Selected element indices, increasing.
using IndexList = std::vector<int64_t, UninitAllocator<int64_t>>;

/// Writes the order keys of elements [a, e) to out[0, e - a). Called from several threads at
/// once, for disjoint ranges.
using OrderKeys = std::function<void(int64_t a, int64_t e, uint32_t* out)>;

/// The first k of [0, n) in the order (key, index), in increasing index order. `threshold` is a
/// first guess of the k-th key (exact results for any value; speed depends on it being a little
/// above the k-th key). min_key (when given): at most the smallest key of the selection (the
/// smallest key itself, except 0 when k >= n, where no key is drawn; 2^32 - 1 when none is
/// selected).
IndexList select_first_k(int64_t n, int64_t k, const OrderKeys& keys, uint32_t threshold, uint32_t* min_key = nullptr);

/// A threshold guess for select_first_k from the keys of n/16 (at most 65536) evenly spaced
/// elements: the sample's key at rank k/n plus four standard deviations.
uint32_t sampled_threshold(int64_t n, int64_t k, const OrderKeys& keys);

}  // namespace gcomp::detail
