// SPDX-License-Identifier: Apache-2.0
// topk with Rice-coded index gaps (docs/wire-format.md §3.4.1, include/gcomp/detail/rice.hpp):
// code bits by hand, sizes and the worst case, same decoded values as plain topk, fewer bits at
// k = 1 % of n, and the GPU decode's two-pass group parse (cuda/topk/rice_kernels.cuh) run on the
// CPU against the codec's own validation.
#include "common/test_util.hpp"
#include "host/codecs/registry.hpp"

#include <gcomp/detail/rice.hpp>
#include <gcomp/detail/sparse.hpp>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>
#include <random>

using namespace gcomp;
using gcomp::test::bitwise_equal;
using gcomp::test::bytes_equal;

namespace {

uint32_t word_at(const std::vector<uint8_t>& p, size_t w) {
  uint32_t v = 0;
  std::memcpy(&v, p.data() + 4 * w, 4);
  return v;
}

void set_word(std::vector<uint8_t>& p, size_t w, uint32_t v) { std::memcpy(p.data() + 4 * w, &v, 4); }

/// x with exactly the given indices nonzero (value i + 1, alternating sign): topk selects them.
std::vector<float> with_support(int64_t n, const std::vector<int64_t>& idx) {
  std::vector<float> x(static_cast<size_t>(n), 0.0f);
  for (size_t j = 0; j < idx.size(); ++j)
    x[static_cast<size_t>(idx[j])] = static_cast<float>(j + 1) * (j % 2 == 0 ? 1.0f : -1.0f);
  return x;
}

}  // namespace

TEST(RiceTest, CodeBitsByHand) {
  // b = 2: gap 1 -> v = 0: "1" "00"; gap 6 -> v = 5 = (1, 01): "0" "1" "01". Stream bit t is bit t
  // of word t / 32, every code starts at its lowest position.
  std::vector<uint32_t> w(2, 0u);
  uint64_t pos = detail::write_rice(w.data(), 0, 1, 2);
  EXPECT_EQ(pos, 3u);
  pos = detail::write_rice(w.data(), pos, 6, 2);
  EXPECT_EQ(pos, 7u);
  // bits 0..2 = 1,0,0; bits 3..6 = 0,1,0,1
  EXPECT_EQ(w[0], 0x1u | (0x2u << 3) | (0x8u << 3));
  // b = 0: unary only. gap 3 -> "001".
  std::vector<uint32_t> u(1, 0u);
  EXPECT_EQ(detail::write_rice(u.data(), 0, 3, 0), 3u);
  EXPECT_EQ(u[0], 0x4u);
  // A code across word boundaries reads back (bits 30 .. 96: four words).
  std::vector<uint32_t> x(4, 0u);
  const uint64_t end = detail::write_rice(x.data(), 30, 1000, 4);
  uint64_t at = 30;
  uint64_t gap = 0;
  ASSERT_EQ(detail::read_rice(x.data(), at, end, 4, 1000, gap), detail::kRiceOk);
  EXPECT_EQ(gap, 1000u);
  EXPECT_EQ(at, end);
  EXPECT_EQ(detail::rice_len(1000, 4), end - 30);
  for (uint32_t v : {1u, 2u, 0x80000000u, 0x00010000u, 0xffffffffu, 0x40u})
    EXPECT_EQ(detail::ctz32(v), static_cast<uint32_t>(__builtin_ctz(v))) << v;
}

TEST(RiceTest, ParameterAndSizes) {
  EXPECT_EQ(detail::rice_param(int64_t{1} << 20, 10485), 6u);  // n/k = 100
  EXPECT_EQ(detail::rice_param(100, 100), 0u);
  EXPECT_EQ(detail::rice_param(1000, 1), 9u);
  EXPECT_EQ(detail::rice_param(0, 0), 0u);
  // Sizes: 4k values + T + directory + worst-case stream words.
  auto c = make_codec("topk:k=3000,index=rice", Layout(100000));
  const uint32_t b = detail::rice_param(100000, 3000);
  EXPECT_EQ(b, 5u);
  const uint64_t worst = 3000u * (1u + b) + ((100000u - 3000u) >> b);
  EXPECT_EQ(c->encoded_bytes(), 4u * 3000 + 4 + 4 * 2 + 4 * ((worst + 31) / 32));
  EXPECT_EQ(c->encoded_bits(), 32.0 * (3000 + 1 + 2) + static_cast<double>(worst));
  EXPECT_TRUE(c->variable_length());
  EXPECT_EQ(c->length_prefix_bytes(), 4u * 3000 + 4);
  EXPECT_EQ(c->spec().canonical(), "topk:k=3000,index=rice");
  EXPECT_EQ(CodecSpec::parse("topk:k=9,index=plain").canonical(), "topk:k=9");
  EXPECT_FALSE(make_codec("topk:k=9", Layout(100))->variable_length());
  // randk sends no indices.
  try {
    (void)CodecSpec::parse("randk:k=3,index=rice");
    ADD_FAILURE() << "randk with index accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), gcompErrorInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("randk sends no indices"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)CodecSpec::parse("topk:index=golomb"), Error);
}

TEST(RiceTest, WorstCaseIsReachedAndNeverExceeded) {
  // k - 1 gaps of 1 and one gap of n - k + 1: the bound of §3.4.1 exactly.
  const int64_t n = 5000;
  const int64_t k = 40;
  auto c = make_codec("topk:k=40,index=rice", Layout(n));
  std::vector<int64_t> idx(static_cast<size_t>(k));
  std::iota(idx.begin(), idx.end() - 1, 0);
  idx.back() = n - 1;
  const auto p = test::encode(*c, with_support(n, idx), RngKey{});
  const uint32_t total = word_at(p, static_cast<size_t>(k));
  EXPECT_EQ(total, static_cast<uint32_t>(detail::rice_worst_bits(n, k, detail::rice_param(n, k))));
  EXPECT_EQ(c->used_bytes(p), c->encoded_bytes());
  // Random supports stay below it.
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<int64_t> all(static_cast<size_t>(n));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    std::vector<int64_t> pick(all.begin(), all.begin() + k);
    std::sort(pick.begin(), pick.end());
    const auto q = test::encode(*c, with_support(n, pick), RngKey{});
    EXPECT_LE(word_at(q, static_cast<size_t>(k)), total);
    EXPECT_NO_THROW(c->validate(q));
  }
}

TEST(RiceTest, DecodesToThePlainTopkValues) {
  for (const auto& [n, spec] : {std::pair<int64_t, std::string>{1, "topk:k=1"},
                                {7, "topk:k=7"},
                                {1000, "topk:k=1"},
                                {4097, "topk:ratio=0.3"},
                                {70000, "topk:ratio=0.05"},
                                {3000, "topk:k=2049"}}) {
    const Layout layout(n);
    auto plain = make_codec(spec, layout);
    auto rice = make_codec(spec + ",index=rice", layout);
    const auto x = test::gaussian(n, 11);
    const RngKey key{5, 1, 2, 0};
    const auto pp = test::encode(*plain, x, key);
    const auto pr = test::encode(*rice, x, key);
    // Same values in the same order, then the index part.
    const size_t k = static_cast<size_t>(detail::sparse_k_of(CodecSpec::parse(spec), n));
    EXPECT_TRUE(std::equal(pp.begin(), pp.begin() + static_cast<std::ptrdiff_t>(4 * k), pr.begin())) << spec;
    EXPECT_TRUE(bitwise_equal(test::decode(*rice, pr, key), test::decode(*plain, pp, key))) << spec << " n=" << n;
  }
}

TEST(RiceTest, FewerBitsThanPlainTopkAtOnePercentOfTwoToThe20) {
  // The criterion: k = 1 % of n = 2^20 on a Gaussian vector.
  const int64_t n = int64_t{1} << 20;
  const auto x = test::gaussian(n, 1);
  auto plain = make_codec("topk:ratio=0.01", Layout(n));
  auto rice = make_codec("topk:ratio=0.01,index=rice", Layout(n));
  const auto pp = test::encode(*plain, x, RngKey{});
  const auto pr = test::encode(*rice, x, RngKey{});
  const double k = 10485;
  EXPECT_EQ(plain->payload_bits(pp), k * (32 + 20));
  // Rice codes of geometric-like gaps with mean n/k = 100: about 8.1 bits per index.
  const double rice_bits = rice->payload_bits(pr);
  EXPECT_LT(rice_bits, k * (32 + 8.5));
  EXPECT_GT(rice_bits, k * (32 + 7.5));
  EXPECT_LT(8.0 * static_cast<double>(rice->used_bytes(pr)), 8.0 * static_cast<double>(pp.size()));
  // Even the worst case is below plain here: k (1 + b) + (n - k) / 2^b < k (b + 3).
  EXPECT_LT(rice->encoded_bytes(), plain->encoded_bytes());
}

namespace {

/// The GPU decode (cuda/topk/rice_kernels.cuh) run on the CPU: the header/padding/value checks of
/// rice_check_kernel, the group sums with relative indices (rice_group_sum_kernel), their
/// exclusive scan, the total check, then the per-group scatter from the scanned bases. Returns the
/// decoded vector, or nothing when any check fails.
std::optional<std::vector<float>> gpu_view_decode(const Codec& c, const std::vector<uint8_t>& p) {
  const int64_t n = c.num_elems();
  const int64_t k = detail::sparse_k_of(c.spec(), n);
  const uint32_t b = detail::rice_param(n, k);
  const int64_t dir = detail::rice_dir_entries(k);
  const int64_t worst = static_cast<int64_t>(detail::rice_worst_bits(n, k, b));
  const int64_t words = (worst + 31) / 32;
  if (p.size() != c.encoded_bytes()) return std::nullopt;
  const uint32_t total = word_at(p, static_cast<size_t>(k));
  if (total > worst) return std::nullopt;
  if (k == 0 && total != 0) return std::nullopt;
  std::vector<float> vals(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) {
    std::memcpy(&vals[static_cast<size_t>(j)], p.data() + 4 * j, 4);
    if (!std::isfinite(vals[static_cast<size_t>(j)])) return std::nullopt;
  }
  std::vector<uint32_t> d(static_cast<size_t>(dir));
  for (int64_t e = 0; e < dir; ++e) {
    d[static_cast<size_t>(e)] = word_at(p, static_cast<size_t>(k + 1 + e));
    if (d[static_cast<size_t>(e)] < (e > 0 ? d[static_cast<size_t>(e - 1)] : 0u) || d[static_cast<size_t>(e)] > total)
      return std::nullopt;
  }
  std::vector<uint32_t> w(static_cast<size_t>(words));
  for (int64_t i = 0; i < words; ++i) w[static_cast<size_t>(i)] = word_at(p, static_cast<size_t>(k + 1 + dir + i));
  for (int64_t i = total / 32; i < words; ++i) {
    const uint32_t keep = (i == total / 32 && total % 32 != 0) ? ((1u << (total % 32)) - 1u) : 0u;
    if (w[static_cast<size_t>(i)] & ~keep) return std::nullopt;
  }
  const int64_t groups = dir + (k > 0 ? 1 : 0);
  const auto range = [&](int64_t g) {
    return std::pair<uint64_t, uint64_t>{g == 0 ? 0u : d[static_cast<size_t>(g - 1)],
                                         g < dir ? d[static_cast<size_t>(g)] : total};
  };
  const auto count = [&](int64_t g) { return std::min(detail::kRiceGroup, k - g * detail::kRiceGroup); };
  std::vector<int64_t> sums(static_cast<size_t>(groups));
  for (int64_t g = 0; g < groups; ++g) {
    const auto [begin, end] = range(g);
    int64_t last = -1;
    if (detail::rice_walk_group(w.data(), begin, end, b, n, count(g), -1, last, [](int64_t, int64_t) {}) !=
        detail::kRiceOk)
      return std::nullopt;
    sums[static_cast<size_t>(g)] = last + 1;
  }
  std::vector<int64_t> before(static_cast<size_t>(groups));
  std::exclusive_scan(sums.begin(), sums.end(), before.begin(), int64_t{0});
  if (groups > 0 && before.back() + sums.back() > n) return std::nullopt;
  std::vector<float> out(static_cast<size_t>(n), 0.0f);
  for (int64_t g = 0; g < groups; ++g) {
    const auto [begin, end] = range(g);
    int64_t last = 0;
    const int64_t first = g * detail::kRiceGroup;
    EXPECT_EQ(detail::rice_walk_group(
                  w.data(), begin, end, b, n, count(g), before[static_cast<size_t>(g)] - 1, last,
                  [&](int64_t j, int64_t i) { out[static_cast<size_t>(i)] = vals[static_cast<size_t>(first + j)]; }),
              detail::kRiceOk);
  }
  return out;
}

bool cpu_accepts(const Codec& c, const std::vector<uint8_t>& p) {
  try {
    c.validate(p);
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

TEST(RiceTest, GpuDecodeViewAgreesWithTheCpuCodecOnValidAndCorruptPayloads) {
  std::mt19937_64 rng(9);
  for (const auto& [n, spec] : {std::pair<int64_t, const char*>{3000, "topk:k=2500,index=rice"},
                                {20000, "topk:ratio=0.11,index=rice"},
                                {100000, "topk:k=40,index=rice"},
                                {257, "topk:k=3,index=rice"},
                                {64, "topk:k=64,index=rice"}}) {
    auto c = make_codec(spec, Layout(n));
    const auto x = test::gaussian(n, 4);
    const auto good = test::encode(*c, x, RngKey{});
    const auto view = gpu_view_decode(*c, good);
    ASSERT_TRUE(view.has_value()) << spec;
    EXPECT_TRUE(bitwise_equal(*view, test::decode(*c, good, RngKey{}))) << spec;
    // Bit flips anywhere in the index part (T, directory, stream, padding): both accept or both
    // reject, and when both accept they decode alike.
    const int64_t k = detail::sparse_k_of(c->spec(), n);
    const size_t from = static_cast<size_t>(4 * k);
    int rejected = 0;
    for (int trial = 0; trial < 400; ++trial) {
      auto bad = good;
      const size_t byte = from + rng() % (bad.size() - from);
      bad[byte] ^= static_cast<uint8_t>(1u << (rng() % 8));
      const auto v = gpu_view_decode(*c, bad);
      const bool cpu_ok = cpu_accepts(*c, bad);
      ASSERT_EQ(v.has_value(), cpu_ok) << spec << ": byte " << byte;
      if (cpu_ok) {
        EXPECT_TRUE(bitwise_equal(*v, test::decode(*c, bad, RngKey{}))) << spec;
      }
      rejected += cpu_ok ? 0 : 1;
    }
    // Flips inside a remainder keep the structure (a different valid message: raw payloads carry no
    // checksum); the others must be caught, and are frequent enough to exercise every check.
    EXPECT_GT(rejected, 40) << spec;
  }
}

TEST(RiceTest, CorruptIndexStreamsAreRejected) {
  // n = 6000, k = 2500: b = 1, 2 directory entries, padding words after the stream.
  const int64_t n = 6000;
  auto c = make_codec("topk:k=2500,index=rice", Layout(n));
  ASSERT_EQ(detail::rice_param(n, 2500), 1u);
  const size_t k = 2500, kT = k, kDir = k + 1, kStream = k + 3;
  const auto good = test::encode(*c, test::gaussian(n, 2), RngKey{});
  const uint32_t total = word_at(good, kT);
  const size_t words = good.size() / 4;
  ASSERT_LT(kStream + (total + 31) / 32, words) << "the test needs padding words";
  const auto rejects = [&](const char* what, auto&& edit) {
    auto p = good;
    edit(p);
    std::vector<float> out(static_cast<size_t>(n), 7.0f);
    try {
      c->decode(p, RngKey{}, out);
      ADD_FAILURE() << what << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), gcompErrorCorruptPayload) << what;
    }
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float v) { return v == 7.0f; })) << what;
    EXPECT_FALSE(gpu_view_decode(*c, p).has_value()) << what << ": the GPU view accepts it";
  };
  rejects("T beyond the worst case", [&](auto& p) { set_word(p, kT, 0xffffffffu); });
  rejects("T one bit short", [&](auto& p) {
    set_word(p, kT, total - 1);
    const size_t w = kStream + (total - 1) / 32;
    set_word(p, w, word_at(p, w) & ~(1u << ((total - 1) % 32)));
  });
  rejects("decreasing directory", [&](auto& p) { set_word(p, kDir + 1, word_at(p, kDir) - 1); });
  rejects("directory beyond T", [&](auto& p) { set_word(p, kDir + 1, total + 1); });
  rejects("directory off by one", [&](auto& p) { set_word(p, kDir, word_at(p, kDir) + 1); });
  rejects("padding bit", [&](auto& p) { set_word(p, words - 1, 0x80000000u); });
  rejects("zero run past the group", [&](auto& p) { set_word(p, kStream, 0u); });
  rejects("NaN value", [&](auto& p) { set_word(p, 17, 0x7fc00000u); });
  rejects("a zero run longer than any gap", [&](auto& p) {
    for (size_t w = kStream; w < kStream + 100; ++w) set_word(p, w, 0u);
  });
}
