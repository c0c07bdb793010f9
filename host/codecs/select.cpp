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

bool before(const Candidate& a, const Candidate& b) { return a.key != b.key ? a.key < b.key : a.index < b.index; }

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

/// The k first of the candidates (all elements with key <= some threshold, at least k of them),
/// in index order.
std::vector<int64_t> first_k_of(std::vector<Candidate>& cands, int64_t k) {
  std::vector<Candidate> order(cands);
  std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), before);
  const Candidate last = order[static_cast<size_t>(k - 1)];
  std::vector<int64_t> idx;
  idx.reserve(static_cast<size_t>(k));
  for (const Candidate& c : cands)
    if (!before(last, c)) idx.push_back(c.index);
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
  for (int64_t j = 0; j < samples; ++j) {
    const int64_t i =
        static_cast<int64_t>(static_cast<double>(j) * static_cast<double>(n) / static_cast<double>(samples));
    keys(i, i + 1, &sample[static_cast<size_t>(j)]);
  }
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
