// SPDX-License-Identifier: Apache-2.0
#include "host/codecs/select.hpp"

#include "host/codecs/kernels.hpp"
#include "host/codecs/pieces.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>

namespace gcomp::detail {

namespace {

struct Candidate {
  uint32_t key;
  int64_t index;
};

/// The elements with key <= threshold, in index order; false (out unspecified) when there are
/// more than cap.
bool collect(int64_t n, const OrderKeys& keys, uint32_t threshold, int64_t cap, std::vector<Candidate>& out) {
  std::vector<std::vector<Candidate>> per_piece(static_cast<size_t>(num_pieces(n)));
  std::atomic<int64_t> total{0};
  std::atomic<bool> overflow{false};
  for_each_piece(n, [&](int64_t begin, int64_t end) {
    uint32_t buf[kSubElems];
    uint32_t idx[kSubElems];
    std::vector<Candidate>& mine = per_piece[static_cast<size_t>(begin / kPieceElems)];
    for_each_sub(begin, end, [&](int64_t a, int64_t e) {
      if (overflow.load(std::memory_order_relaxed)) return;
      keys(a, e, buf);
      const int64_t c = kernels::select_at_most(buf, e - a, threshold, idx);
      if (c == 0) return;
      if (total.fetch_add(c, std::memory_order_relaxed) + c > cap) {
        overflow.store(true, std::memory_order_relaxed);
        return;
      }
      for (int64_t j = 0; j < c; ++j) mine.push_back(Candidate{buf[idx[j]], a + idx[j]});
    });
  });
  if (overflow.load()) return false;
  out.clear();
  out.reserve(static_cast<size_t>(total.load()));
  for (const auto& v : per_piece) out.insert(out.end(), v.begin(), v.end());
  return true;
}

/// The k-th smallest key (1-based) of the candidates, and how many keys are below it: one
/// histogram pass over 2048 bins spanning [0, largest key], then a selection among the keys of the
/// bin that holds rank k (about 2048 times fewer than the candidates for spread-out keys).
uint32_t kth_key(const std::vector<Candidate>& cands, int64_t k, int64_t& below) {
  uint32_t top = 0;
  for (const Candidate& c : cands) top = std::max(top, c.key);
  int shift = 0;
  while ((top >> shift) >= 2048u) ++shift;
  std::vector<int64_t> hist(2048, 0);
  for (const Candidate& c : cands) ++hist[c.key >> shift];
  uint32_t bin = 0;
  int64_t before_bin = 0;
  while (before_bin + hist[bin] < k) before_bin += hist[bin++];
  std::vector<uint32_t> in_bin;
  in_bin.reserve(static_cast<size_t>(hist[bin]));
  for (const Candidate& c : cands)
    if ((c.key >> shift) == bin) in_bin.push_back(c.key);
  const auto kth = in_bin.begin() + (k - before_bin - 1);
  std::nth_element(in_bin.begin(), kth, in_bin.end());
  const uint32_t key = *kth;
  below = before_bin + std::count_if(in_bin.begin(), in_bin.end(), [key](uint32_t v) { return v < key; });
  return key;
}

/// The k first of the candidates (all elements with key <= some threshold, at least k of them,
/// in index order), in index order: every key below the k-th key, then the lowest-index ties.
std::vector<int64_t> first_k_of(const std::vector<Candidate>& cands, int64_t k) {
  int64_t below = 0;
  const uint32_t last = kth_key(cands, k, below);
  int64_t ties = k - below;  // candidates with the k-th key that are taken
  std::vector<int64_t> idx;
  idx.reserve(static_cast<size_t>(k));
  for (const Candidate& c : cands)
    if (c.key < last || (c.key == last && ties-- > 0)) idx.push_back(c.index);
  return idx;
}

/// Exact k-th key by radix select (11 + 11 + 10 bits), then one pass emitting the elements with
/// a smaller key and the first ties. Sequential; scratch of 2048 counts and one sub-range.
std::vector<int64_t> radix_first_k(int64_t n, int64_t k, const OrderKeys& keys) {
  uint32_t buf[kSubElems];
  std::vector<int64_t> hist(2048);
  uint32_t prefix = 0;
  int64_t need = k;  // elements still to take among those whose key starts with `prefix`
  const int shifts[3] = {21, 10, 0};
  const int widths[3] = {11, 11, 10};
  for (int level = 0; level < 3; ++level) {
    std::fill(hist.begin(), hist.end(), 0);
    const int shift = shifts[level];
    const int above = shift + widths[level];  // bits of the key fixed by `prefix`
    for (int64_t a = 0; a < n; a += kSubElems) {
      const int64_t e = std::min(n, a + kSubElems);
      keys(a, e, buf);
      for (int64_t j = 0; j < e - a; ++j) {
        const uint32_t key = buf[j];
        if (above < 32 && (key >> above) != prefix) continue;
        ++hist[(key >> shift) & ((1u << widths[level]) - 1u)];
      }
    }
    uint32_t bin = 0;
    for (; bin < (1u << widths[level]); ++bin) {
      if (need <= hist[bin]) break;
      need -= hist[bin];
    }
    prefix = (prefix << widths[level]) | bin;
  }
  // prefix is the k-th key; take every smaller key and the first `need` equal ones.
  std::vector<int64_t> idx;
  idx.reserve(static_cast<size_t>(k));
  uint32_t pos[kSubElems];
  for (int64_t a = 0; a < n && static_cast<int64_t>(idx.size()) < k; a += kSubElems) {
    const int64_t e = std::min(n, a + kSubElems);
    keys(a, e, buf);
    const int64_t c = kernels::select_at_most(buf, e - a, prefix, pos);
    for (int64_t j = 0; j < c; ++j) {
      if (buf[pos[j]] == prefix) {
        if (need == 0) continue;
        --need;
      }
      idx.push_back(a + pos[j]);
    }
  }
  return idx;
}

}  // namespace

uint32_t sampled_threshold(int64_t n, int64_t k, const OrderKeys& keys) {
  const int64_t samples = std::min<int64_t>((n + 15) / 16, 65536);
  if (samples <= 0 || k <= 0) return 0;
  std::vector<uint32_t> sample(static_cast<size_t>(samples));
  // Each sample is a cache line of its own (a load from memory for a large x): the samples are
  // taken in tasks of 4096 on the pool when n is large.
  constexpr int64_t kPerTask = 4096;
  const auto take = [&](int64_t t) {
    for (int64_t j = t * kPerTask; j < std::min(samples, (t + 1) * kPerTask); ++j) {
      const int64_t i =
          static_cast<int64_t>(static_cast<double>(j) * static_cast<double>(n) / static_cast<double>(samples));
      keys(i, i + 1, &sample[static_cast<size_t>(j)]);
    }
  };
  const int64_t tasks = ceil_div(samples, kPerTask);
  if (n < kParallelMinElems)
    for (int64_t t = 0; t < tasks; ++t) take(t);
  else
    parallel_for(tasks, take);
  const double r = std::floor(static_cast<double>(k) * static_cast<double>(samples) / static_cast<double>(n));
  const int64_t rank = std::min<int64_t>(samples - 1, static_cast<int64_t>(r + 4.0 * std::sqrt(r) + 8.0));
  std::nth_element(sample.begin(), sample.begin() + rank, sample.end());
  return sample[static_cast<size_t>(rank)];
}

std::vector<int64_t> select_first_k(int64_t n, int64_t k, const OrderKeys& keys, uint32_t threshold) {
  std::vector<int64_t> idx;
  if (k <= 0 || n <= 0) return idx;
  if (k >= n) {
    idx.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = i;
    return idx;
  }
  const int64_t cap = 2 * k + 65536;
  std::vector<Candidate> cands;
  uint64_t t = threshold;
  for (int attempt = 0; attempt < 4; ++attempt) {
    if (!collect(n, keys, static_cast<uint32_t>(t), cap, cands)) {
      t /= 2;  // too many: a lower threshold
      continue;
    }
    if (static_cast<int64_t>(cands.size()) >= k) return first_k_of(cands, k);
    t = std::min<uint64_t>(0xffffffffu, 2 * t + 65536);  // too few: a higher one
  }
  return radix_first_k(n, k, keys);
}

}  // namespace gcomp::detail
