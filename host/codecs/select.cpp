// SPDX-License-Identifier: Apache-2.0
#include "host/codecs/select.hpp"

#include "host/codecs/kernels.hpp"
#include "host/codecs/pieces.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>

namespace gcomp::detail {

namespace {

/// A candidate: its key and its offset in its pool piece (the piece is its part's index).
struct Candidate {
  uint32_t key;
  uint32_t offset;
};

/// The candidates of each pool piece, in index order, their count and their smallest key.
struct Candidates {
  std::vector<std::vector<Candidate>> parts;
  int64_t total = 0;
  uint32_t min_key = 0xffffffffu;
};

/// The elements with key <= threshold, per piece in index order; false (out unspecified) when
/// there are more than cap.
bool collect(int64_t n, const OrderKeys& keys, uint32_t threshold, int64_t cap, Candidates& out) {
  out.parts.assign(static_cast<size_t>(num_pieces(n)), {});
  std::vector<uint32_t> mins(out.parts.size(), 0xffffffffu);
  std::atomic<int64_t> total{0};
  std::atomic<bool> overflow{false};
  for_each_piece(n, [&](int64_t begin, int64_t end) {
    uint32_t buf[kSubElems];
    uint32_t idx[kSubElems];
    std::vector<Candidate>& mine = out.parts[static_cast<size_t>(begin / kPieceElems)];
    uint32_t& m = mins[static_cast<size_t>(begin / kPieceElems)];
    for_each_sub(begin, end, [&](int64_t a, int64_t e) {
      if (overflow.load(std::memory_order_relaxed)) return;
      keys(a, e, buf);
      const int64_t c = kernels::select_at_most(buf, e - a, threshold, idx);
      if (c == 0) return;
      if (total.fetch_add(c, std::memory_order_relaxed) + c > cap) {
        overflow.store(true, std::memory_order_relaxed);
        return;
      }
      const auto base = static_cast<uint32_t>(a - begin);
      for (int64_t j = 0; j < c; ++j) {
        mine.push_back(Candidate{buf[idx[j]], base + idx[j]});
        m = std::min(m, buf[idx[j]]);
      }
    });
  });
  out.total = total.load();
  out.min_key = *std::min_element(mins.begin(), mins.end());
  return !overflow.load();
}

/// fn(part_begin, part_end, task) over the parts in at most kSelectTasks tasks, on the pool when
/// there are many candidates.
constexpr int64_t kSelectTasks = 16;

template <class F>
void over_parts(const Candidates& c, F&& fn) {
  const auto parts = static_cast<int64_t>(c.parts.size());
  const int64_t per = ceil_div(parts, kSelectTasks);
  const auto task = [&](int64_t t) { fn(t * per, std::min(parts, (t + 1) * per), t); };
  const int64_t tasks = ceil_div(parts, per);
  if (c.total < 16384)
    for (int64_t t = 0; t < tasks; ++t) task(t);
  else
    parallel_for(tasks, task);
}

/// The first k of the candidates (all elements with key <= top, at least k of them) in index
/// order, and the smallest key among them. The k-th key comes from one histogram pass over 2048
/// bins spanning [smallest candidate key, top] (top-k's keys of large |x| fill a narrow part of
/// [0, top]) and a selection among the keys of the bin that holds rank k (about 2048 times fewer
/// than the candidates for spread-out keys); then every smaller key and the lowest-index ties are
/// written out. Each pass runs in tasks over the pieces.
IndexList first_k_of(const Candidates& c, int64_t k, uint32_t top, uint32_t& min_key) {
  const uint32_t lo = c.min_key;
  min_key = lo;
  int shift = 0;
  while (((top - lo) >> shift) >= 2048u) ++shift;
  std::vector<std::vector<int64_t>> hists(static_cast<size_t>(kSelectTasks), std::vector<int64_t>(2048, 0));
  over_parts(c, [&](int64_t p0, int64_t p1, int64_t t) {
    std::vector<int64_t>& h = hists[static_cast<size_t>(t)];
    for (int64_t p = p0; p < p1; ++p)
      for (const Candidate& x : c.parts[static_cast<size_t>(p)]) ++h[(x.key - lo) >> shift];
  });
  std::vector<int64_t> hist(2048, 0);
  for (const auto& h : hists)
    for (size_t i = 0; i < hist.size(); ++i) hist[i] += h[i];
  uint32_t bin = 0;
  int64_t below = 0;
  while (below + hist[bin] < k) below += hist[bin++];
  // One pass: per piece, the keys of that bin and the count of keys in lower bins; then the k-th
  // key among the bin's keys, and per piece the keys below it and the ties with it.
  const size_t parts = c.parts.size();
  std::vector<std::vector<uint32_t>> found(parts);
  std::vector<int64_t> less(parts, 0), equal(parts, 0);
  over_parts(c, [&](int64_t p0, int64_t p1, int64_t) {
    for (int64_t p = p0; p < p1; ++p) {
      int64_t lower = 0;
      std::vector<uint32_t>& mine = found[static_cast<size_t>(p)];
      for (const Candidate& x : c.parts[static_cast<size_t>(p)]) {
        const uint32_t b = (x.key - lo) >> shift;
        lower += b < bin;
        if (b == bin) mine.push_back(x.key);
      }
      less[static_cast<size_t>(p)] = lower;
    }
  });
  std::vector<uint32_t> in_bin;
  in_bin.reserve(static_cast<size_t>(hist[bin]));
  for (const auto& f : found) in_bin.insert(in_bin.end(), f.begin(), f.end());
  const auto kth = in_bin.begin() + (k - below - 1);
  std::nth_element(in_bin.begin(), kth, in_bin.end());
  const uint32_t last = *kth;
  below += std::count_if(in_bin.begin(), in_bin.end(), [last](uint32_t v) { return v < last; });
  for (size_t p = 0; p < parts; ++p)
    for (const uint32_t v : found[p]) {
      less[p] += v < last;
      equal[p] += v == last;
    }
  // Ties are taken in index order.
  std::vector<int64_t> offset(parts + 1, 0), ties(parts, 0);
  int64_t ties_left = k - below;
  for (size_t p = 0; p < parts; ++p) {
    ties[p] = std::min(ties_left, equal[p]);
    ties_left -= ties[p];
    offset[p + 1] = offset[p] + less[p] + ties[p];
  }
  IndexList idx(static_cast<size_t>(k));  // written below, in tasks
  over_parts(c, [&](int64_t p0, int64_t p1, int64_t) {
    for (int64_t p = p0; p < p1; ++p) {
      int64_t o = offset[static_cast<size_t>(p)], take = ties[static_cast<size_t>(p)];
      const int64_t base = p * kPieceElems;
      for (const Candidate& x : c.parts[static_cast<size_t>(p)])
        if (x.key < last || (x.key == last && take-- > 0)) idx[static_cast<size_t>(o++)] = base + x.offset;
    }
  });
  return idx;
}

/// Exact k-th key by radix select (11 + 11 + 10 bits), then one pass emitting the elements with
/// a smaller key and the first ties. Sequential; scratch of 2048 counts and one sub-range.
IndexList radix_first_k(int64_t n, int64_t k, const OrderKeys& keys, uint32_t& min_key) {
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
  IndexList idx;
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
      min_key = std::min(min_key, buf[pos[j]]);
      idx.push_back(a + pos[j]);
    }
  }
  return idx;
}

/// The key of rank `rank` (from 0) of v by radix selection on 11, 11 and 10 bits, keeping only the
/// keys of the chosen bin after each histogram: a few branch-free passes, where std::nth_element
/// on 65536 sampled keys took about 1 ms (its compares mispredict). v is reordered.
uint32_t key_of_rank(std::vector<uint32_t>& v, int64_t rank) {
  const int shifts[3] = {21, 10, 0};
  const uint32_t masks[3] = {0x7ffu, 0x7ffu, 0x3ffu};
  int64_t count = static_cast<int64_t>(v.size());
  uint32_t prefix = 0;
  int64_t hist[2048];
  for (int level = 0; level < 3; ++level) {
    const int shift = shifts[level];
    const uint32_t mask = masks[level];
    std::fill(hist, hist + mask + 1, 0);
    for (int64_t i = 0; i < count; ++i) ++hist[(v[static_cast<size_t>(i)] >> shift) & mask];
    uint32_t bin = 0;
    while (rank >= hist[bin]) rank -= hist[bin++];
    prefix = (prefix << (level == 2 ? 10 : 11)) | bin;
    int64_t kept = 0;
    for (int64_t i = 0; i < count; ++i) {
      const uint32_t key = v[static_cast<size_t>(i)];
      v[static_cast<size_t>(kept)] = key;
      kept += ((key >> shift) & mask) == bin;
    }
    count = kept;
  }
  return prefix;
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
  return key_of_rank(sample, rank);
}

IndexList select_first_k(int64_t n, int64_t k, const OrderKeys& keys, uint32_t threshold, uint32_t* min_key) {
  uint32_t smallest = 0xffffffffu;
  IndexList idx;
  if (k >= n && n > 0) {
    smallest = 0;  // not looked at
    idx.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = i;
  } else if (k > 0 && n > 0) {
    const int64_t cap = 2 * k + 65536;
    Candidates cands;
    uint64_t t = threshold;
    bool done = false;
    for (int attempt = 0; attempt < 4 && !done; ++attempt) {
      if (!collect(n, keys, static_cast<uint32_t>(t), cap, cands)) {
        t /= 2;  // too many: a lower threshold
        continue;
      }
      if (cands.total >= k) {
        idx = first_k_of(cands, k, static_cast<uint32_t>(t), smallest);
        done = true;
      } else {
        t = std::min<uint64_t>(0xffffffffu, 2 * t + 65536);  // too few: a higher one
      }
    }
    if (!done) idx = radix_first_k(n, k, keys, smallest);
  }
  if (min_key != nullptr) *min_key = smallest;
  return idx;
}

}  // namespace gcomp::detail
