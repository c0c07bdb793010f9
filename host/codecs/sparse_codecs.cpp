// SPDX-License-Identifier: Apache-2.0
// topk (§4.1) and randk (§4.2). Payload layouts in docs/wire-format.md (§3.4, §3.4.1 index=rice, §3.6).
#include "host/codecs/simple_codecs.hpp"

#include "host/codecs/kernels.hpp"
#include "host/codecs/pieces.hpp"
#include "host/codecs/registry.hpp"
#include "host/codecs/select.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/rice.hpp>
#include <gcomp/detail/payload_rules.hpp>
#include <gcomp/detail/sparse.hpp>

#include <algorithm>
#include <limits>
#include <memory>
#include <cmath>
#include <cstring>
#include <exception>
#include <utility>

namespace gcomp::detail {

SparseCodec::SparseCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
  k_ = sparse_k_of(this->spec(), num_elems());
  index_bits_ = static_cast<int>(ceil_log2_u64(static_cast<uint64_t>(num_elems())));
  const auto* const randk = this->spec().options_if<RandKOptions>();
  const auto* const topk = this->spec().options_if<TopKOptions>();
  unbiased_ = randk != nullptr && randk->unbiased;
  rice_ = topk != nullptr && topk->index == IndexCode::kRice;
  if (rice_) {
    rice_b_ = detail::rice_param(num_elems(), k_);
    rice_dir_ = rice_dir_entries(k_);
    const uint64_t worst = detail::rice_worst_bits(num_elems(), k_, rice_b_);
    GCOMP_EXPECTS(worst <= uint64_t{0xffffffff}, gcompErrorInvalidArgument,
                  "topk index=rice: the worst-case index stream (" + std::to_string(worst) +
                      " bits) does not fit 32-bit bit offsets; use fewer elements per message or index=plain");
    rice_worst_bits_ = static_cast<int64_t>(worst);
    rice_words_ = ceil_div(rice_worst_bits_, 32);
  }
}

size_t SparseCodec::encoded_bytes() const {
  if (spec().id() == CodecId::kRandK) return static_cast<size_t>(8 + 4 * k_);
  if (rice_) return static_cast<size_t>(4 * k_ + 4 + 4 * rice_dir_ + 4 * rice_words_);
  return static_cast<size_t>(4 * k_ + 4 * ceil_div(k_ * index_bits_, 32));
}

double SparseCodec::encoded_bits() const {
  if (spec().id() == CodecId::kRandK) return 32.0 * static_cast<double>(k_) + 64.0;
  if (rice_) return 32.0 * static_cast<double>(k_ + 1 + rice_dir_) + static_cast<double>(rice_worst_bits_);
  return static_cast<double>(k_) * (32.0 + index_bits_);
}

size_t SparseCodec::length_prefix_bytes() const { return rice_ ? static_cast<size_t>(4 * k_ + 4) : encoded_bytes(); }

uint32_t SparseCodec::rice_total(std::span<const uint8_t> payload) const {
  if (payload.size() < length_prefix_bytes() || payload.size() > encoded_bytes())
    corrupt(spec(), "size is " + std::to_string(payload.size()) + " bytes, expected " +
                        std::to_string(encoded_bytes()) + " or a short payload of at least " +
                        std::to_string(length_prefix_bytes()));
  const uint32_t total = load_u32(payload.data() + 4 * k_);
  if (total > static_cast<uint64_t>(rice_worst_bits_))
    corrupt(spec(),
            "total index bits " + std::to_string(total) + " exceed the worst case " + std::to_string(rice_worst_bits_));
  return total;
}

size_t SparseCodec::used_bytes(std::span<const uint8_t> payload) const {
  if (!rice_) return encoded_bytes();
  return static_cast<size_t>(4 * k_ + 4 + 4 * rice_dir_ + 4 * ceil_div(rice_total(payload), 32));
}

size_t SparseCodec::used_bytes_for_length(uint64_t length_field) const {
  if (!rice_) return encoded_bytes();
  if (length_field > static_cast<uint64_t>(rice_worst_bits_))
    corrupt(spec(), "total index bits " + std::to_string(length_field) + " exceed the worst case " +
                        std::to_string(rice_worst_bits_));
  return static_cast<size_t>(4 * k_ + 4 + 4 * rice_dir_ + 4 * ceil_div(static_cast<int64_t>(length_field), 32));
}

double SparseCodec::payload_bits(std::span<const uint8_t> payload) const {
  if (!rice_) return encoded_bits();
  return 32.0 * static_cast<double>(k_ + 1 + rice_dir_) + static_cast<double>(rice_total(payload));
}

void SparseCodec::rice_encode(const IndexList& idx, uint8_t* out) const {
  std::vector<uint32_t> words(static_cast<size_t>(rice_words_), 0u);
  std::vector<uint32_t> dir(static_cast<size_t>(rice_dir_), 0u);
  uint64_t pos = 0;
  int64_t prev = -1;
  for (int64_t j = 0; j < k_; ++j) {
    if (j > 0 && j % kRiceGroup == 0) dir[static_cast<size_t>(j / kRiceGroup - 1)] = static_cast<uint32_t>(pos);
    pos = write_rice(words.data(), pos, static_cast<uint64_t>(idx[static_cast<size_t>(j)] - prev), rice_b_);
    prev = idx[static_cast<size_t>(j)];
  }
  store_u32(out + 4 * k_, static_cast<uint32_t>(pos));
  for (int64_t d = 0; d < rice_dir_; ++d) store_u32(out + 4 * (k_ + 1 + d), dir[static_cast<size_t>(d)]);
  uint8_t* stream = out + 4 * (k_ + 1 + rice_dir_);
  for (int64_t w = 0; w < rice_words_; ++w) store_u32(stream + 4 * w, words[static_cast<size_t>(w)]);
}

IndexList SparseCodec::rice_indices(std::span<const uint8_t> payload) const {
  check_payload_size(payload);  // full, or short with exactly the used size
  const uint32_t total = rice_total(payload);
  const uint8_t* in = payload.data();
  // Directory: the offsets of codes 1024, 2048, ...; non-decreasing, within T.
  std::vector<uint64_t> starts(static_cast<size_t>(rice_dir_ + 2), 0u);
  for (int64_t d = 0; d < rice_dir_; ++d) {
    const uint32_t off = load_u32(in + 4 * (k_ + 1 + d));
    if (off < starts[static_cast<size_t>(d)])
      corrupt(spec(), "index directory offsets decrease at entry " + std::to_string(d));
    if (off > total)
      corrupt(spec(), "index directory entry " + std::to_string(d) + " lies beyond the total index bits");
    starts[static_cast<size_t>(d + 1)] = off;
  }
  starts[static_cast<size_t>(rice_dir_ + 1)] = total;
  // The stream: words present in the payload; a short payload ends after word ceil(T/32).
  const size_t stream_off = static_cast<size_t>(4 * (k_ + 1 + rice_dir_));
  std::vector<uint32_t> words(static_cast<size_t>(rice_words_), 0u);
  const int64_t present = static_cast<int64_t>((payload.size() - stream_off) / 4);
  for (int64_t w = 0; w < std::min(rice_words_, present); ++w)
    words[static_cast<size_t>(w)] = load_u32(in + stream_off + 4 * static_cast<size_t>(w));
  for (int64_t w = total / 32; w < rice_words_; ++w) {
    const uint32_t keep = (w == total / 32 && total % 32 != 0) ? ((1u << (total % 32)) - 1u) : 0u;
    if (words[static_cast<size_t>(w)] & ~keep) corrupt(spec(), "bits set beyond the total index bits");
  }
  IndexList idx(static_cast<size_t>(k_));  // every entry is written or an error thrown
  int64_t prev = -1;
  const int64_t groups = rice_dir_ + (k_ > 0 ? 1 : 0);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t first = g * kRiceGroup;
    const int64_t count = std::min(kRiceGroup, k_ - first);
    int64_t last = prev;
    const uint32_t st = rice_walk_group(words.data(), starts[static_cast<size_t>(g)],
                                        starts[static_cast<size_t>(g + 1)], rice_b_, num_elems(), count, prev, last,
                                        [&](int64_t j, int64_t i) { idx[static_cast<size_t>(first + j)] = i; });
    const std::string where = " in index group " + std::to_string(g);
    if (st == kRicePastEnd) corrupt(spec(), "an index code runs past the end of its group" + where);
    if (st == kRiceTooLong) corrupt(spec(), "an index gap quotient beyond the last element" + where);
    if (st == kRiceBeyondN) corrupt(spec(), "an index at or beyond n = " + std::to_string(num_elems()) + where);
    if (st == kRiceWrongEnd) corrupt(spec(), "the index codes do not end where the group ends" + where);
    prev = last;
  }
  if (k_ == 0 && total != 0u) corrupt(spec(), "index bits in an empty message");
  return idx;
}

Guarantee SparseCodec::guarantee() const {
  const double n = static_cast<double>(num_elems());
  const double k = static_cast<double>(k_);
  if (num_elems() == 0) return Guarantee{Guarantee::Kind::kContractive, 0.0, 1.0};
  if (spec().id() == CodecId::kRandK && unbiased_) return Guarantee{Guarantee::Kind::kUnbiased, n / k - 1.0, 0.0};
  return Guarantee{Guarantee::Kind::kContractive, 0.0, k / n};
}

IndexList SparseCodec::select(std::span<const float> x, const RngKey& key, std::vector<uint8_t>* scanned,
                              uint32_t* min_key) const {
  const int64_t n = num_elems();
  if (k_ <= 0 || k_ >= n) return select_first_k(n, k_, OrderKeys{}, 0, min_key);  // nothing or everything
  if (spec().id() == CodecId::kTopK) {
    // Order keys 0x7fffffff - |x| bits: larger |x| first (topk_before); NaN and Inf come first of
    // all, so every one of them is a candidate when the threshold is at least 2^23 - 1.
    const OrderKeys keys = [&](int64_t a, int64_t e, uint32_t* out) {
      kernels::topk_order_keys(x.data() + a, e - a, out);
    };
    const uint32_t t = std::max<uint32_t>(sampled_threshold(n, k_, keys), 0x7fffffu);
    return select_first_k(n, k_, keys, t, min_key);
  }
  // Random-k: the Philox words of the select stream, one block per four elements (randk_before).
  // The k smallest of n uniform words lie below about (k + 4 sqrt(k) + 16) 2^32 / n. When
  // encoding, the finiteness scan of x rides along (x is otherwise read only at the k selected
  // elements): its loads overlap the Philox arithmetic instead of taking a pass of their own.
  const bool scan = scanned != nullptr && !x.empty();
  const OrderKeys keys = [&](int64_t a, int64_t e, uint32_t* out) {
    if (a % 4 == 0 && (e - a) % 4 == 0) {
      kernels::philox_words(key, kStreamSelect, static_cast<uint64_t>(a) / 4, (e - a) / 4, out);
    } else {
      const int64_t a4 = a & ~int64_t{3};
      uint32_t words[kSubElems + 8];
      kernels::philox_words(key, kStreamSelect, static_cast<uint64_t>(a4) / 4, ceil_div(e - a4, 4), words);
      std::copy(words + (a - a4), words + (e - a4), out);
    }
    if (scan && a % kSubElems == 0 && e == std::min(n, a + kSubElems))
      (*scanned)[static_cast<size_t>(a / kSubElems)] = kernels::find_nonfinite(x.data() + a, e - a) < 0 ? 1 : 2;
  };
  const double k = static_cast<double>(k_);
  const double t = (k + 4.0 * std::sqrt(k) + 16.0) / static_cast<double>(std::max<int64_t>(n, 1)) * 4294967296.0;
  return select_first_k(n, k_, keys, t >= 4294967295.0 ? 0xffffffffu : static_cast<uint32_t>(t), min_key);
}

namespace {

/// fn(begin, end) over [0, count) in tasks of kSparseTask on the pool from two tasks on (each
/// element of a gather is a load from memory of its own: top-k 0.1 % at 2^24 gathers 16777
/// values, about 0.2 ms on one thread), else at once on this thread.
constexpr int64_t kSparseTask = 4096;

template <class F>
void sparse_tasks(int64_t count, F&& fn) {
  if (count < 2 * kSparseTask) {
    fn(int64_t{0}, count);
    return;
  }
  parallel_for(ceil_div(count, kSparseTask),
               [&](int64_t t) { fn(t * kSparseTask, std::min(count, (t + 1) * kSparseTask)); });
}

}  // namespace

void SparseCodec::encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  const int64_t n = num_elems();
  const bool randk = spec().id() == CodecId::kRandK;
  std::vector<uint8_t> scanned;
  if (randk) scanned.assign(static_cast<size_t>(ceil_div(n, kSubElems)), 0);
  uint32_t min_key = 0;
  const IndexList idx = select(x, key, randk ? &scanned : nullptr, &min_key);
  if (randk) {
    // Every sub-range the key pass did not reach is scanned here: all of x when the selection
    // drew no keys (k = 0 or k = n), else none in a normal run.
    const bool drawn = std::any_of(scanned.begin(), scanned.end(), [](uint8_t v) { return v != 0; });
    bool finite = drawn;
    if (drawn) {
      for (size_t s = 0; s < scanned.size() && finite; ++s) {
        const int64_t a = static_cast<int64_t>(s) * kSubElems;
        finite = scanned[s] == 1 ||
                 (scanned[s] == 0 && kernels::find_nonfinite(x.data() + a, std::min(n, a + kSubElems) - a) < 0);
      }
    }
    if (!finite) require_finite(x.data(), n);  // names the first NaN or Inf (or passes: n = 0)
  } else if (min_key < 0x800000u) {
    // NaN and Inf come first in the top-k order (keys below 2^23, every finite value's is above):
    // the selection's smallest key says whether x holds one, and require_finite names the first.
    require_finite(x.data(), n);
  }
  // The selected values (a cache miss each for a large x), gathered in tasks on the pool: straight
  // into the payload, except for randk:unbiased, whose values are checked (times n/k) first.
  uint8_t* out = payload.data();
  uint8_t* values = out + (randk ? 8 : 0);
  const auto gather = [&](uint8_t* dst) {
    sparse_tasks(k_, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) store_f32(dst + 4 * j, x[static_cast<size_t>(idx[j])]);
    });
  };
  if (randk && unbiased_) {
    // The decoder multiplies each value by n/k: it must stay within fp32 (issue 18 #11).
    const std::unique_ptr<uint8_t[]> vals(new uint8_t[static_cast<size_t>(4 * k_)]);
    gather(vals.get());
    const float scale = randk_scale(n, k_);
    for (int64_t j = 0; j < k_; ++j)
      if (!is_finite_f(load_f32(vals.get() + 4 * j) * scale))
        GCOMP_FAIL(gcompErrorInvalidArgument, "randk:unbiased: element " + std::to_string(idx[j]) +
                                                  " times n/k would decode to Inf (beyond the float32 range)");
    if (k_ > 0) std::memcpy(values, vals.get(), static_cast<size_t>(4 * k_));
  } else {
    gather(values);
  }
  if (randk) {
    store_u32(out, key.step);
    store_u32(out + 4, key.rank);
    return;
  }
  if (rice_) {
    rice_encode(idx, out);
    return;
  }
  const int64_t words = ceil_div(k_ * index_bits_, 32);
  uint8_t* packed = out + 4 * k_;
  sparse_tasks(words, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) store_u32(packed + 4 * w, pack_index_word(idx.data(), k_, index_bits_, w));
  });
}

namespace {

/// Index j of the packed index words of a plain top-k payload (`words` words of `bits`-bit
/// fields, LSB first). Up to 32 bits: one 64-bit window of the two words the field touches
/// (bits + offset <= 63), not a load per bit. n = 1 has 0-bit indices and no words: every index is 0.
int64_t plain_index(const uint8_t* packed, int64_t words, int bits, int64_t j) {
  const int64_t bit = j * bits;
  if (bits <= 32) {
    const int64_t w = bit / 32;
    uint64_t window = w < words ? load_u32(packed + 4 * w) : 0u;
    if (w + 1 < words) window |= static_cast<uint64_t>(load_u32(packed + 4 * (w + 1))) << 32;
    return static_cast<int64_t>((window >> (bit % 32)) & ((uint64_t{1} << bits) - 1u));
  }
  uint64_t v = 0;
  for (int b = 0; b < bits; ++b) {
    const int64_t pos = bit + b;
    v |= static_cast<uint64_t>((load_u32(packed + 4 * (pos / 32)) >> (pos % 32)) & 1u) << b;
  }
  return static_cast<int64_t>(v);
}

/// Indices j, j + 1, ... of a payload in order: from its index list, or from the plain stream of
/// `bits`-bit fields through FieldReader (one load per 32 bits, where plain_index loads a two-word
/// window per index). Words from `words` on read as zeros, as in plain_index. Fields wider than 32
/// bits (n > 2^32) go through plain_index.
class IndexReader {
 public:
  IndexReader(const uint8_t* packed, const int64_t* list, int64_t words, int bits, int64_t j)
      : list_(list == nullptr ? nullptr : list + j),
        bits_(bits),
        j_(j),
        fields_(Word{packed, packed == nullptr ? 0 : words}, list_ != nullptr || bits_ > 32 ? 0 : j,
                list_ != nullptr || bits_ > 32 ? 1u : static_cast<uint32_t>(bits)) {}
  int64_t next() {
    if (list_ != nullptr) return *list_++;
    if (bits_ > 32) return plain_index(fields_.word().packed, fields_.word().words, bits_, j_++);
    return static_cast<int64_t>(fields_.next());
  }

 private:
  struct Word {  // stream word w, 0 from `words` on
    const uint8_t* packed;
    int64_t words;
    uint32_t operator()(uint64_t w) const { return static_cast<int64_t>(w) < words ? load_u32(packed + 4 * w) : 0u; }
  };
  const int64_t* list_;
  int bits_;
  int64_t j_;
  FieldReader<Word> fields_;
};

/// Elements of one check task (values or indices of one payload).
constexpr int64_t kCheckTask = 16384;

/// One task of pick(): a range of one payload's values or indices, or a whole-payload step.
struct CheckTask {
  enum Kind : uint8_t { kValues, kScaled, kIndices, kPadding, kRice };
  size_t q;  ///< payload
  Kind kind;
  int64_t j0, j1;
};

}  // namespace

void SparseCodec::fill_randk(Picked& picked, std::span<const uint8_t> payload, const RngKey& key) const {
  RngKey k = key;
  k.step = load_u32(payload.data());
  k.rank = load_u32(payload.data() + 4);
  picked.idx = select({}, k);
  picked.first.resize(static_cast<size_t>(num_pieces(num_elems())) + 1);
  for (size_t p = 0; p < picked.first.size(); ++p)
    picked.first[p] = std::lower_bound(picked.idx.begin(), picked.idx.end(), static_cast<int64_t>(p) * kPieceElems) -
                      picked.idx.begin();
}

std::vector<SparseCodec::Picked> SparseCodec::pick(std::span<const std::span<const uint8_t>> payloads,
                                                   std::span<const float> weights, bool reduce, bool direct) const {
  const int64_t n = num_elems();
  const bool randk = spec().id() == CodecId::kRandK;
  const int64_t voff = randk ? 8 : 0;
  const int64_t words = ceil_div(k_ * index_bits_, 32);
  const int64_t pieces = num_pieces(n);
  std::vector<Picked> picks(payloads.size());
  // Payload q's error, as the serial checks report it.
  const auto fail = [&](size_t q, const Error& e) {
    if (!reduce || e.status() != gcompErrorCorruptPayload) throw;
    GCOMP_FAIL(gcompErrorCorruptPayload, "decode_reduce: payload " + std::to_string(q) + ": " + e.what());
  };
  // Sizes in order; the tasks check the payloads before the first of the wrong size, whose error
  // comes only when none of theirs does (the serial order).
  std::vector<CheckTask> tasks;
  std::exception_ptr size_error;
  const auto ranges = [&](size_t q, CheckTask::Kind kind) {
    for (int64_t j = 0; j < k_; j += kCheckTask) tasks.push_back(CheckTask{q, kind, j, std::min(k_, j + kCheckTask)});
  };
  for (size_t q = 0; q < payloads.size() && !size_error; ++q) {
    try {
      try {
        if (direct && !rice_) {
          if (payloads[q].size() != encoded_bytes()) corrupt(spec(), "wrong size");
        } else {
          check_payload_size(payloads[q]);
        }
      } catch (const Error& e) {
        fail(q, e);
      }
    } catch (...) {
      size_error = std::current_exception();
      break;
    }
    Picked& pk = picks[q];
    pk.values = payloads[q].data() + voff;
    pk.weight = weights.empty() ? 1.0f : weights[q];
    pk.scale = randk && unbiased_ ? randk_scale(n, k_) : 1.0f;
    ranges(q, CheckTask::kValues);
    if (randk && unbiased_) ranges(q, CheckTask::kScaled);
    if (rice_) {
      tasks.push_back(CheckTask{q, CheckTask::kRice, 0, k_});
    } else if (!randk) {
      pk.packed = payloads[q].data() + 4 * k_;
      ranges(q, CheckTask::kIndices);
      tasks.push_back(CheckTask{q, CheckTask::kPadding, 0, 0});
    }
  }
  // Plain indices: each task notes (j, piece of index j) where the piece changes from index j - 1,
  // for the piece table; read only after every task passed (an unordered payload never gets there).
  std::vector<std::vector<std::pair<int64_t, int64_t>>> marks(tasks.size());
  const auto check = [&](int64_t t) {
    const CheckTask& c = tasks[static_cast<size_t>(t)];
    const Picked& pk = picks[c.q];
    try {
      switch (c.kind) {
        case CheckTask::kValues: {
          // A branch-free test of the whole range first (vectorised); the first bad value is
          // looked for only when there is one.
          bool all_ok = true;
          for (int64_t j = c.j0; j < c.j1; ++j) all_ok &= value_ok(load_f32(pk.values + 4 * j));
          if (!all_ok)
            for (int64_t j = c.j0; j < c.j1; ++j)
              if (!value_ok(load_f32(pk.values + 4 * j)))
                corrupt(spec(), "value " + std::to_string(j) + " is not finite");
          break;
        }
        case CheckTask::kScaled:
          for (int64_t j = c.j0; j < c.j1; ++j)
            if (!is_finite_f(load_f32(pk.values + 4 * j) * pk.scale))
              corrupt(spec(), "value " + std::to_string(j) + " decodes to Inf (times n/k)");
          break;
        case CheckTask::kIndices: {
          auto& mine = marks[static_cast<size_t>(t)];
          IndexReader reader(pk.packed, nullptr, words, index_bits_, c.j0 > 0 ? c.j0 - 1 : 0);
          int64_t prev = c.j0 > 0 ? reader.next() : -1;
          int64_t piece = prev < 0 ? -1 : prev / kPieceElems;
          for (int64_t j = c.j0; j < c.j1; ++j) {
            const int64_t i = reader.next();
            if (!sparse_index_ok(i, prev, n))
              corrupt(spec(), i >= n ? "index " + std::to_string(i) + " out of range"
                                     : std::string("indices are not strictly increasing"));
            if (i / kPieceElems != piece) {
              piece = i / kPieceElems;
              mine.emplace_back(j, piece);
            }
            prev = i;
          }
          break;
        }
        case CheckTask::kPadding: {
          const int64_t used = k_ * index_bits_;
          if (used % 32 != 0 && !padding_clear(load_u32(pk.packed + 4 * (used / 32)), used))
            corrupt(spec(), "padding bits set after the last index");
          break;
        }
        case CheckTask::kRice:
          picks[c.q].idx = rice_indices(payloads[c.q]);  // T, directory, padding, every code and index
          break;
      }
    } catch (const Error& e) {
      fail(c.q, e);
    }
  };
  int64_t work = 0;
  for (const CheckTask& c : tasks) work += c.j1 - c.j0;
  // On the pool with the write pass (n from kParallelMinElems on) or when there is much to check
  // (top-k 0.1 % of 2^24: 2 x 16777 entries, 0.1 ms on one thread).
  if (tasks.size() > 1 && (work >= 4 * kCheckTask || n >= kParallelMinElems))
    parallel_for(static_cast<int64_t>(tasks.size()), check);
  else
    for (size_t t = 0; t < tasks.size(); ++t) check(static_cast<int64_t>(t));
  if (size_error) std::rethrow_exception(size_error);
  if (direct) return picks;  // validate: no piece tables (n / 65536 entries: n may be anything up to 2^50 here)
  // Piece tables: from the marks (plain; each piece starts at the first mark at or beyond it),
  // else from the indices.
  for (Picked& pk : picks) pk.first.assign(static_cast<size_t>(pieces) + 1, k_);
  std::vector<int64_t> next(picks.size(), 0);  // the first piece not yet given a start
  for (size_t t = 0; t < tasks.size(); ++t)
    for (const auto& [j, piece] : marks[t]) {
      const size_t q = tasks[t].q;
      for (int64_t& p = next[q]; p <= piece; ++p) picks[q].first[static_cast<size_t>(p)] = j;
    }
  for (Picked& pk : picks)
    if (!pk.idx.empty())
      for (int64_t p = 0; p <= pieces; ++p)
        pk.first[static_cast<size_t>(p)] =
            std::lower_bound(pk.idx.begin(), pk.idx.end(), p * kPieceElems) - pk.idx.begin();
  return picks;
}

void SparseCodec::write_picked(std::span<const Picked> picks, bool overwrite, std::span<float> out) const {
  const int64_t n = num_elems();
  const int64_t words = ceil_div(k_ * index_bits_, 32);
  const auto reader = [&](const Picked& pk, int64_t j) {
    return IndexReader(pk.packed, pk.packed != nullptr ? nullptr : pk.idx.data(), words, index_bits_, j);
  };
  const auto value = [](const Picked& pk, int64_t j) { return load_f32(pk.values + 4 * j) * pk.scale; };
  if (!overwrite) {
    // The indices of a payload increase: piece p's part of each payload is [first[p], first[p + 1]).
    // Each entry is a read-modify-write of an output line that is seldom in cache (different ranks
    // select different elements): a batch's indices are read and their lines prefetched for writing
    // first, so that their misses overlap, then the batch is added in index order (the same sums).
    for_each_piece(n, [&](int64_t begin, int64_t) {
      const auto p = static_cast<size_t>(begin / kPieceElems);
      constexpr int64_t kBatch = 128;
      int64_t batch[kBatch];
      for (const Picked& pk : picks) {
        IndexReader at = reader(pk, pk.first[p]);
        for (int64_t j = pk.first[p]; j < pk.first[p + 1]; j += kBatch) {
          const int64_t m = std::min(kBatch, pk.first[p + 1] - j);
          for (int64_t t = 0; t < m; ++t) {
            batch[t] = at.next();
            __builtin_prefetch(out.data() + batch[t], 1, 3);
          }
          for (int64_t t = 0; t < m; ++t) out[batch[t]] = accumulate(out[batch[t]], pk.weight, value(pk, j + t));
        }
      }
    });
    return;
  }
  const Picked& pk = picks[0];
  const bool stream = 4 * n >= stream_min_bytes();
  for_each_piece(n, [&](int64_t begin, int64_t end) {
    const auto p = static_cast<size_t>(begin / kPieceElems);
    int64_t j = pk.first[p];
    const int64_t j_end = pk.first[p + 1];
    IndexReader at = reader(pk, j);
    if (!stream) {
      std::fill(out.data() + begin, out.data() + end, 0.0f);
      for (; j < j_end; ++j) out[at.next()] = value(pk, j);
      return;
    }
    // Zeros and values in an L1 scratch, written out with streaming stores: the output's lines
    // are never read (the output is far larger than the caches). The scratch is zeroed once per
    // piece and only its written elements are cleared again (a memset of it per sub-range cost
    // 0.08 ns per element more than the streaming stores themselves).
    alignas(64) float local[kSubElems];
    std::fill(local, local + kSubElems, 0.0f);
    // i: index j, read ahead (the reader only goes forward); `clear` follows `at` a sub-range behind.
    IndexReader clear = reader(pk, j);
    int64_t i = j < j_end ? at.next() : 0;
    for_each_sub(begin, end, [&](int64_t a, int64_t e) {
      const int64_t j0 = j;
      for (; j < j_end && i < e; ++j) {
        local[i - a] = value(pk, j);
        if (j + 1 < j_end) i = at.next();
      }
      kernels::stream_copy(reinterpret_cast<const uint8_t*>(local), e - a, out.data() + a);
      for (int64_t c = j0; c < j; ++c) local[clear.next() - a] = 0.0f;
    });
    kernels::stream_fence();  // before the pool hands the piece back
  });
}

void SparseCodec::validate(std::span<const uint8_t> payload) const { (void)pick({&payload, 1}, {}, false, true); }

void SparseCodec::decode_impl(std::span<const uint8_t> payload, const RngKey& key, float weight, bool overwrite,
                              std::span<float> out) const {
  // Codec::check_decode_args, with the payload checked by pick
  GCOMP_EXPECTS(
      static_cast<int64_t>(out.size()) == num_elems(), gcompErrorInvalidArgument,
      "decode: output has " + std::to_string(out.size()) + " elements, layout has " + std::to_string(num_elems()));
  std::vector<Picked> picks = pick({&payload, 1}, {&weight, 1}, false, false);
  if (spec().id() == CodecId::kRandK) fill_randk(picks[0], payload, key);
  write_picked(picks, overwrite, out);
}

void SparseCodec::decode_reduce(std::span<const std::span<const uint8_t>> payloads, std::span<const RngKey> keys,
                                std::span<const float> weights, std::span<float> out) const {
  // Codec::check_reduce_args, with the payloads checked by pick: nothing is written before every
  // payload passed.
  GCOMP_EXPECTS(keys.size() == payloads.size() && weights.size() == payloads.size(), gcompErrorInvalidArgument,
                "decode_reduce: " + std::to_string(payloads.size()) + " payloads, " + std::to_string(keys.size()) +
                    " keys and " + std::to_string(weights.size()) + " weights");
  if (payloads.empty()) return;
  GCOMP_EXPECTS(
      static_cast<int64_t>(out.size()) == num_elems(), gcompErrorInvalidArgument,
      "decode: output has " + std::to_string(out.size()) + " elements, layout has " + std::to_string(num_elems()));
  std::vector<Picked> picks = pick(payloads, weights, true, false);
  if (spec().id() != CodecId::kRandK) {
    write_picked(picks, false, out);
    return;
  }
  // randk: each payload's selection is drawn (n keys) and written before the next one's.
  for (size_t q = 0; q < payloads.size(); ++q) {
    fill_randk(picks[q], payloads[q], keys[q]);
    write_picked({&picks[q], 1}, false, out);
    picks[q].idx = {};
  }
}

void SparseCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey& key, float weight,
                                    std::span<float> out) const {
  decode_impl(payload, key, weight, false, out);
}

void SparseCodec::decode(std::span<const uint8_t> payload, const RngKey& key, std::span<float> out) const {
  decode_impl(payload, key, 1.0f, true, out);
}

}  // namespace gcomp::detail
