// SPDX-License-Identifier: Apache-2.0
// sdither (spec/ALGORITHMS.md §5.2(a), docs/wire-format.md §3.7): decode equals dither's bit for
// bit; the payload equals an independent reference encoder's byte for byte; stream sizes are the
// sum of the code lengths; hand-made and fuzzed malformed streams are rejected with the output
// untouched; T1 (unbiasedness) and T16 (sizes).
#include "common/test_util.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/elias.hpp>
#include <gcomp/detail/sdither_decode.hpp>
#include <gcomp/detail/sdither_scan.hpp>
#include <gcomp/threads.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>

using namespace gcomp;
using gcomp::test::bitwise_equal;
using gcomp::test::bytes_equal;

namespace {

// ------------------------------------------------------------------ independent reference coder

uint32_t flog2(uint64_t v) { return static_cast<uint32_t>(63 - std::countl_zero(v)); }
uint32_t ref_len_gamma(uint64_t v) { return 2 * flog2(v) + 1; }
uint32_t ref_len_delta(uint64_t v) { return flog2(v) + 2 * flog2(flog2(v) + 1) + 1; }

struct BitWriter {
  std::vector<bool> bits;
  void put(uint64_t v, uint32_t nbits) {  // MSB first
    for (uint32_t k = nbits; k-- > 0;) bits.push_back(((v >> k) & 1u) != 0);
  }
  void gamma(uint64_t v) {
    const uint32_t l = flog2(v);
    put(0, l);
    put(v, l + 1);
  }
  void delta(uint64_t v) {
    const uint32_t l = flog2(v);
    gamma(l + 1);
    put(v, l);  // low l bits
  }
  void code(bool use_delta, uint64_t v) { use_delta ? delta(v) : gamma(v); }
};

/// Level and sign of each element, read from a dither payload's bit planes (wire-format §3.2).
struct Levels {
  std::vector<float> scales;
  std::vector<uint32_t> level;
  std::vector<bool> negative;
};

Levels levels_from_dither(const Codec& dither, const std::vector<uint8_t>& p) {
  Levels out;
  const int64_t n = dither.num_elems();
  const int64_t m = dither.num_scales();
  out.scales.resize(static_cast<size_t>(m));
  if (m > 0) std::memcpy(out.scales.data(), p.data(), 4 * static_cast<size_t>(m));
  const int nb = static_cast<int>(std::bit_width(dither.spec().options<DitherOptions>().levels));
  out.level.resize(static_cast<size_t>(n));
  out.negative.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const size_t g = static_cast<size_t>(i / 32);
    const size_t base = 4 * static_cast<size_t>(m) + 4 * g * static_cast<size_t>(1 + nb);
    uint32_t w[33];
    std::memcpy(w, p.data() + base, 4 * static_cast<size_t>(1 + nb));
    uint32_t lv = 0;
    for (int k = 0; k < nb; ++k) lv |= ((w[1 + k] >> (i % 32)) & 1u) << k;
    out.level[static_cast<size_t>(i)] = lv;
    out.negative[static_cast<size_t>(i)] = ((w[0] >> (i % 32)) & 1u) != 0;
  }
  return out;
}

/// Payload bytes (of `bytes` bytes) from scales, a directory and a list of stream bits.
std::vector<uint8_t> assemble(size_t bytes, const std::vector<float>& scales, uint32_t total,
                              const std::vector<uint32_t>& dir, const std::vector<bool>& bits) {
  std::vector<uint8_t> p(bytes, 0);
  size_t off = 0;
  for (float s : scales) {
    std::memcpy(p.data() + off, &s, 4);
    off += 4;
  }
  std::memcpy(p.data() + off, &total, 4);
  off += 4;
  for (uint32_t d : dir) {
    std::memcpy(p.data() + off, &d, 4);
    off += 4;
  }
  for (size_t i = 0; i < bits.size(); ++i)
    if (bits[i]) p[off + 4 * (i / 32) + (i % 32) / 8] |= static_cast<uint8_t>(1u << (i % 8));
  return p;
}

/// Reference sdither payload from the dither payload of the same quantizer; also returns the sum
/// of the record lengths computed from the length formulas (not from the writer).
std::vector<uint8_t> reference_payload(const Codec& sd, const Levels& lv, uint64_t* formula_bits) {
  const SDitherOptions& s = sd.spec().options<SDitherOptions>();
  const bool use_delta = s.code == EliasCode::kDelta;
  const int64_t n = sd.num_elems();
  BitWriter w;
  std::vector<uint32_t> dir;
  uint64_t sum = 0;
  for (int64_t c = 0; c * s.chunk < n; ++c) {
    dir.push_back(static_cast<uint32_t>(w.bits.size()));
    int64_t prev = c * s.chunk - 1;
    for (int64_t i = c * s.chunk; i < std::min(n, (c + 1) * s.chunk); ++i) {
      const uint32_t l = lv.level[static_cast<size_t>(i)];
      if (l == 0) continue;
      const uint64_t gap = static_cast<uint64_t>(i - prev);
      w.code(use_delta, gap);
      w.put(lv.negative[static_cast<size_t>(i)] ? 1 : 0, 1);
      if (s.levels > 1) w.code(use_delta, l);
      sum += (use_delta ? ref_len_delta(gap) : ref_len_gamma(gap)) + 1 +
             (s.levels > 1 ? (use_delta ? ref_len_delta(l) : ref_len_gamma(l)) : 0);
      prev = i;
    }
  }
  *formula_bits = sum;
  return assemble(sd.encoded_bytes(), lv.scales, static_cast<uint32_t>(w.bits.size()), dir, w.bits);
}

std::string dither_twin(const CodecSpec& spec) {
  const SDitherOptions& s = spec.options<SDitherOptions>();
  return "dither:levels=" + std::to_string(s.levels) + ",norm=" + (s.norm == Norm::kLinf ? "linf" : "l2") +
         ",block=" + std::to_string(s.block);
}

std::vector<float> input(int64_t n, uint64_t seed) {
  std::vector<float> x = test::gaussian(n, seed);
  for (int64_t i = 0; i < n; ++i) {
    if (i % 7 == 2) x[static_cast<size_t>(i)] = 0.0f;
    if (i % 53 == 9) x[static_cast<size_t>(i)] *= 40.0f;  // spikes: long gaps around them
  }
  return x;
}

// ------------------------------------------------------------------------- equality with dither

class SDitherEqualsDitherTest : public testing::TestWithParam<std::tuple<const char*, std::vector<int64_t>>> {};

TEST_P(SDitherEqualsDitherTest, DecodeIsBitwiseDitherAndPayloadIsTheReference) {
  const CodecSpec spec = CodecSpec::parse(std::get<0>(GetParam()));
  const Layout layout(std::get<1>(GetParam()));
  auto sd = make_codec(spec, layout);
  auto di = make_codec(dither_twin(spec), layout);
  const int64_t n = layout.num_elems();
  for (uint64_t seed : {1ull, 2ull, 0xdeadbeefull}) {
    const auto x = input(n, seed);
    for (uint32_t step : {0u, 7u}) {
      const RngKey key{seed * 31 + 5, 3, step, 0};
      const auto psd = test::encode(*sd, x, key);
      const auto pdi = test::encode(*di, x, key);
      const auto ysd = test::decode(*sd, psd, key);
      EXPECT_TRUE(bitwise_equal(ysd, test::decode(*di, pdi, key))) << spec.canonical() << " seed " << seed;
      // accumulate form too (same rounding rule as dither)
      std::vector<float> a = input(n, seed + 100), b = a;
      sd->decode_accumulate(psd, key, -0.75f, a);
      di->decode_accumulate(pdi, key, -0.75f, b);
      EXPECT_TRUE(bitwise_equal(a, b));
      // payload == independent reference encoder; stream size == sum of the code lengths
      uint64_t formula = 0;
      const auto ref = reference_payload(*sd, levels_from_dither(*di, pdi), &formula);
      EXPECT_TRUE(bytes_equal(psd, ref)) << spec.canonical() << " seed " << seed;
      uint32_t total;
      std::memcpy(&total, psd.data() + 4 * sd->num_scales(), 4);
      EXPECT_EQ(total, formula);
      const double chunks =
          std::ceil(static_cast<double>(n) / static_cast<double>(spec.options<SDitherOptions>().chunk));
      EXPECT_EQ(sd->payload_bits(psd),
                32.0 * (static_cast<double>(sd->num_scales()) + 1 + chunks) + static_cast<double>(formula));
      EXPECT_EQ(sd->used_bytes(psd), 4 * (static_cast<size_t>(sd->num_scales()) + 1 + static_cast<size_t>(chunks)) +
                                         4 * ((formula + 31) / 32));
      EXPECT_LE(sd->payload_bits(psd), sd->encoded_bits());
      EXPECT_LE(sd->used_bytes(psd), sd->encoded_bytes());
    }
  }
}

const char* const kSDitherSpecs[] = {
    "sdither",
    "sdither:code=delta",
    "sdither:levels=2,norm=linf,block=16",
    "sdither:levels=4,norm=linf,code=delta,chunk=32",
    "sdither:levels=7,norm=l2,block=33,chunk=31",
    "sdither:levels=1,norm=linf,block=10,chunk=1",
    "sdither:levels=100,norm=l2,chunk=64,code=delta",
};

std::vector<std::vector<int64_t>> sd_layouts() {
  return {{0}, {1}, {31}, {33}, {4097}, {4096, 1}, {5, 0, 40, 1, 33}, {64, 64, 7}, {100, 4096, 3}};
}

/// Test name: the spec with its punctuation as '_', then the segment lengths.
std::string sd_param_name(const testing::TestParamInfo<std::tuple<const char*, std::vector<int64_t>>>& info) {
  std::string s = std::get<0>(info.param);
  for (char& ch : s)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  for (auto v : std::get<1>(info.param)) s += "_" + std::to_string(v);
  return s;
}

INSTANTIATE_TEST_SUITE_P(Sweep, SDitherEqualsDitherTest,
                         testing::Combine(testing::ValuesIn(kSDitherSpecs), testing::ValuesIn(sd_layouts())),
                         sd_param_name);

// Messages from 2^18 elements encode, validate and decode by ranges of whole chunks on the pool
// (streams concatenated at bit offsets, ranges that start inside a Philox group when the chunk is
// odd): the same payload as the independent reference, for any thread count (test_kernels.cpp).
INSTANTIATE_TEST_SUITE_P(PoolRanges, SDitherEqualsDitherTest,
                         testing::Combine(testing::Values("sdither", "sdither:levels=4,norm=linf,code=delta,chunk=32",
                                                          "sdither:levels=7,norm=l2,block=33,chunk=31",
                                                          "sdither:levels=1,norm=linf,block=10,chunk=1"),
                                          testing::Values(std::vector<int64_t>{270001},
                                                          std::vector<int64_t>{131077, 70001, 3, 64, 100000})),
                         sd_param_name);

// --------------------------------------------------------------------------- bit-exact examples

TEST(SDitherFormatTest, HandComputedStreams) {
  // One nonzero (x[5] = -2, level s deterministically, §2.6): gap 6 from position -1.
  std::vector<float> x(8, 0.0f);
  x[5] = -2.0f;
  struct Case {
    const char* spec;
    uint32_t total;
    uint32_t word0;
  } cases[] = {
      {"sdither:norm=linf", 6, 0x2Cu},                        // gamma(6) = 00110, sign 1
      {"sdither:norm=linf,code=delta", 6, 0x2Eu},             // delta(6) = 011 10, sign 1
      {"sdither:norm=linf,levels=4", 11, 0x12Cu},             // ..., gamma(4) = 00100
      {"sdither:norm=linf,levels=4,code=delta", 11, 0x1AEu},  // ..., delta(4) = 011 00
  };
  for (const Case& c : cases) {
    auto codec = make_codec(c.spec, Layout(8));
    const auto p = test::encode(*codec, x, RngKey{9, 0, 0, 0});
    float scale;
    uint32_t total, dir0, word0;
    std::memcpy(&scale, p.data(), 4);
    std::memcpy(&total, p.data() + 4, 4);
    std::memcpy(&dir0, p.data() + 8, 4);
    std::memcpy(&word0, p.data() + 12, 4);
    EXPECT_EQ(scale, 2.0f) << c.spec;
    EXPECT_EQ(total, c.total) << c.spec;
    EXPECT_EQ(dir0, 0u) << c.spec;
    EXPECT_EQ(word0, c.word0) << c.spec;
    EXPECT_TRUE(bitwise_equal(test::decode(*codec, p, RngKey{}), x)) << c.spec;
  }
}

TEST(SDitherFormatTest, EliasHelpersMatchTheDefinitions) {
  for (uint64_t v = 1; v < 5000; v = v < 70 ? v + 1 : v * 3 + 1) {
    EXPECT_EQ(detail::len_gamma(v), ref_len_gamma(v)) << v;
    EXPECT_EQ(detail::len_delta(v), ref_len_delta(v)) << v;
    for (uint32_t code : {detail::kEliasGamma, detail::kEliasDelta}) {
      std::vector<uint32_t> words(8, 0u);
      const uint64_t start = 29;  // straddles a word boundary
      const uint64_t end = detail::write_elias(words.data(), start, code, v);
      EXPECT_EQ(end - start, detail::elias_len(code, v));
      BitWriter w;
      w.put(0, 29);
      w.code(code == detail::kEliasDelta, v);
      for (size_t i = 0; i < w.bits.size(); ++i) EXPECT_EQ(detail::get_bit(words.data(), i), w.bits[i] ? 1u : 0u) << v;
      uint64_t pos = start, got = 0;
      EXPECT_EQ(detail::read_elias(words.data(), pos, end, code, 20, got), detail::kEliasOk);
      EXPECT_EQ(got, v);
      EXPECT_EQ(pos, end);
      pos = start;
      EXPECT_EQ(detail::read_elias(words.data(), pos, end - 1, code, 20, got), detail::kEliasPastEnd) << v;
      pos = start;
      if (v >= 2) {
        EXPECT_EQ(detail::read_elias(words.data(), pos, end, code, flog2(v) - 1, got), detail::kEliasTooLong) << v;
      }
    }
  }
}

TEST(SDitherFormatTest, WorstCaseBufferHoldsTheDenseWorstCase) {
  // gamma: every element nonzero is the worst case: 2 bits (s = 1), 2 + len(s) bits per element.
  EXPECT_EQ(make_codec("sdither:chunk=4096", Layout(10000))->encoded_bits(), 32.0 * (1 + 1 + 3) + 2 * 10000.0);
  EXPECT_EQ(make_codec("sdither:levels=4", Layout(100))->encoded_bits(), 32.0 * 3 + 100 * (2.0 + 5));
  // delta: gap 2 (4 + 1 bits) beats two gap-1 records (2 x 2 bits): the worst case is every
  // other element nonzero, 2.5 bits per element.
  EXPECT_EQ(make_codec("sdither:code=delta", Layout(100))->encoded_bits(), 32.0 * 3 + 250);
  // The dense ell_inf constant vector (every element at level s) fits and fills the gamma bound.
  auto c = make_codec("sdither:levels=4,norm=linf,chunk=16", Layout(50));
  std::vector<float> x(50, -1.5f);
  const auto p = test::encode(*c, x, RngKey{});
  EXPECT_EQ(c->payload_bits(p), c->encoded_bits());
  EXPECT_EQ(c->used_bytes(p), c->encoded_bytes());
  EXPECT_TRUE(bitwise_equal(test::decode(*c, p, RngKey{}), x));
}

TEST(SDitherFormatTest, GammaVersusDelta) {
  // §5.2(a): gamma beats delta except at very sparse l2 with s = 1 (d = 1024 Gaussian).
  for (uint64_t seed : {1ull, 2ull, 3ull}) {
    const auto x = test::gaussian(1024, seed);
    const RngKey key{seed, 0, 0, 0};
    auto bits_of = [&](const char* spec) {
      auto c = make_codec(spec, Layout(1024));
      return c->payload_bits(test::encode(*c, x, key));
    };
    EXPECT_LT(bits_of("sdither:levels=1,norm=l2,code=delta"), bits_of("sdither:levels=1,norm=l2,code=gamma"));
    EXPECT_LT(bits_of("sdither:levels=4,norm=linf,code=gamma"), bits_of("sdither:levels=4,norm=linf,code=delta"));
    EXPECT_LT(bits_of("sdither:levels=1,norm=linf,code=gamma"), bits_of("sdither:levels=1,norm=linf,code=delta"));
  }
}

// ------------------------------------------------------------------------------ malformed input

class SDitherMalformedTest : public testing::Test {
 protected:
  // n = 64, chunks of 16, s = 2, one l2 block.
  std::unique_ptr<Codec> c_ = make_codec("sdither:levels=2,chunk=16", Layout(64));
  std::vector<float> one_{1.0f};

  gcompStatus_t status(const std::vector<uint8_t>& p, std::string* msg = nullptr) {
    std::vector<float> out(64, 3.0f);
    try {
      c_->decode(p, RngKey{}, out);
    } catch (const Error& e) {
      if (msg) *msg = e.what();
      EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float v) { return v == 3.0f; })) << "output touched";
      return e.status();
    }
    return gcompSuccess;
  }
  std::vector<uint8_t> make(std::vector<float> scales, uint32_t total, std::vector<uint32_t> dir,
                            const std::string& bits) {
    std::vector<bool> b;
    for (char ch : bits)
      if (ch == '0' || ch == '1') b.push_back(ch == '1');
    return assemble(c_->encoded_bytes(), scales, total, dir, b);
  }
  void expect_reject(const std::vector<uint8_t>& p, const std::string& what) {
    std::string msg;
    EXPECT_EQ(status(p, &msg), gcompErrorCorruptPayload) << what;
    EXPECT_NE(msg.find(what), std::string::npos) << "expected '" << what << "' in: " << msg;
  }
};

TEST_F(SDitherMalformedTest, HandMadeStreams) {
  // Valid: element 0 with level 2 (gamma(1) = 1, sign 0, gamma(2) = 010); chunks 1..3 empty.
  const auto good = make(one_, 5, {0, 5, 5, 5}, "1 0 010");
  ASSERT_EQ(status(good), gcompSuccess);
  std::vector<float> y(64);
  c_->decode(good, RngKey{}, y);
  EXPECT_EQ(y[0], 1.0f);
  // A record in every chunk, the last one at the last element (gap 16 = 000010000).
  ASSERT_EQ(
      status(make(one_, 4 * 13, {0, 13, 26, 39}, "000010000 1 010 000010000 0 011 000010000 0 011 000010000 1 011")),
      gcompErrorCorruptPayload);  // level 3 > s = 2
  ASSERT_EQ(
      status(make(one_, 4 * 13, {0, 13, 26, 39}, "000010000 1 010 000010000 0 010 000010000 0 1 000 000010000 1 010")),
      gcompErrorCorruptPayload);  // "1 000": level gamma(1) then 3 stray bits: a gap prefix runs out
  ASSERT_EQ(
      status(make(one_, 4 * 13, {0, 13, 26, 39}, "000010000 1 010 000010000 0 010 000010000 0 010 000010000 1 010")),
      gcompSuccess);

  expect_reject(make(one_, 5, {0, 5, 5, 5}, "1 0 011"), "level above 2");
  expect_reject(make(one_, 5, {0, 5, 5, 5}, "1 0 001"), "over-long Elias prefix of a level");
  expect_reject(make(one_, 9, {0, 9, 9, 9}, "000010001 0"), "a gap runs past the end of its chunk");  // gap 17
  expect_reject(make(one_, 11, {0, 11, 11, 11}, "00000100000 0"), "over-long Elias prefix of a gap");
  expect_reject(make(one_, 10, {0, 10, 10, 10}, "0000000000"), "over-long Elias prefix of a gap");
  expect_reject(make(one_, 1, {0, 1, 1, 1}, "1"), "no sign bit");
  expect_reject(make(one_, 4, {0, 4, 4, 4}, "1 0 01"), "a level code runs past the end of its chunk");
  expect_reject(make(one_, 3, {0, 3, 3, 3}, "001"), "a gap code runs past the end of its chunk");
  expect_reject(make(one_, 5, {1, 5, 5, 5}, "1 0 010"), "chunk 0 does not start at stream bit 0");
  expect_reject(make(one_, 5, {0, 5, 4, 5}, "1 0 010"), "chunk offsets decrease at chunk 2");
  expect_reject(make(one_, 5, {0, 5, 5, 6}, "1 0 010"), "starts beyond the total stream bits");
  expect_reject(make(one_, 5, {0, 5, 5, 5}, "1 0 010 1"), "bits set beyond the total stream bits");
  expect_reject(make(one_, 1u << 30, {0, 5, 5, 5}, "1 0 010"), "exceed the worst case");
  expect_reject(make({0.0f}, 5, {0, 5, 5, 5}, "1 0 010"), "whose scale is 0");
  expect_reject(make({-1.0f}, 5, {0, 5, 5, 5}, "1 0 010"), "negative or not finite");
  expect_reject(make({std::numeric_limits<float>::infinity()}, 5, {0, 5, 5, 5}, "1 0 010"), "negative or not finite");
  // A chunk whose records end exactly at its successor's offset is fine; one bit short is not.
  expect_reject(make(one_, 5, {0, 4, 5, 5}, "1 0 010"), "a level code runs past the end of its chunk");
  // used_bytes and payload_bits refuse an impossible total.
  EXPECT_THROW((void)c_->used_bytes(make(one_, 1u << 30, {0, 5, 5, 5}, "1")), Error);
  EXPECT_THROW((void)c_->payload_bits(std::vector<uint8_t>(3, 0)), Error);
}

TEST(SDitherFuzzTest, RandomBitFlipsAreRejectedOrDecodeCleanly) {
  // 600 corrupted payloads (1-3 random bit flips each): never a crash; either gcompErrorCorruptPayload
  // with the output untouched, or a successful decode to finite values.
  std::mt19937_64 rng(20240601);
  int rejected = 0, accepted = 0;
  for (const char* spec : {"sdither:levels=3,block=50,chunk=32", "sdither:levels=1,norm=linf,code=delta,chunk=16"}) {
    const Layout layout(std::vector<int64_t>{130, 70});
    auto c = make_codec(spec, layout);
    const auto x = input(layout.num_elems(), 4);
    const auto good = test::encode(*c, x, RngKey{1, 0, 0, 0});
    for (int t = 0; t < 300; ++t) {
      auto bad = good;
      const int flips = 1 + static_cast<int>(rng() % 3);
      for (int f = 0; f < flips; ++f) {
        const size_t bit = rng() % (8 * bad.size());
        bad[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      }
      std::vector<float> out(x.size(), 3.0f);
      try {
        c->decode(bad, RngKey{}, out);
        ++accepted;
        EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float v) { return std::isfinite(v); }));
      } catch (const Error& e) {
        ++rejected;
        EXPECT_EQ(e.status(), gcompErrorCorruptPayload) << e.what();
        EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float v) { return v == 3.0f; }));
      }
    }
  }
  EXPECT_GT(rejected, 300);  // most flips land in the stream or the padding and break it
  RecordProperty("accepted", accepted);
}

TEST(SDitherFuzzTest, PaddingOfALargePayloadIsCheckedEverywhere) {
  // At levels=1 a full payload of 2^22 + 2^19 elements carries over 1 MiB of zero padding after a few
  // kilobytes of records, checked in pieces on the pool: one bit set in its first word, inside,
  // at a piece boundary or in its last word is rejected (decode, decode_reduce) with the output
  // untouched, for 1 and 2 threads.
  const Layout layout((int64_t{1} << 22) + (int64_t{1} << 19));
  auto c = make_codec("sdither:levels=1,norm=l2", layout);
  const auto x = input(layout.num_elems(), 8);
  const auto good = test::encode(*c, x, RngKey{5, 0, 0, 0});
  const size_t used = c->used_bytes(good);
  ASSERT_GT(good.size() - used, size_t{1} << 20);
  for (int threads : {1, 2}) {
    set_cpu_threads(threads);
    for (size_t at :
         {used, used + 4 * 65536 + 1, used + 4 * 65536 * 2 - 1, (used + good.size()) / 2, good.size() - 1}) {
      auto bad = good;
      bad[at] ^= 0x10u;
      std::vector<float> out(x.size(), 3.0f);
      try {
        c->decode(bad, RngKey{}, out);
        ADD_FAILURE() << "a bit in the padding at byte " << at << " was accepted";
      } catch (const Error& e) {
        EXPECT_EQ(e.status(), gcompErrorCorruptPayload) << e.what();
        EXPECT_NE(std::string(e.what()).find("beyond the total stream bits"), std::string::npos) << e.what();
      }
      const std::vector<std::span<const uint8_t>> both = {good, bad};
      const std::vector<RngKey> keys(2);
      const std::vector<float> weights = {1.0f, 1.0f};
      EXPECT_THROW(c->decode_reduce(both, keys, weights, out), Error);
      EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float v) { return v == 3.0f; })) << "byte " << at;
    }
    std::vector<float> out(x.size(), 3.0f);
    c->decode(good, RngKey{}, out);  // the unchanged payload still decodes
  }
  set_cpu_threads(0);
}

namespace {

/// The GPU decode's view of a payload (cuda/sdither/sdither_kernels.cuh): the header checks, then
/// per chunk the decode kernel's one walk, detail::sdither_decode_chunk (detail::sdither_walk_chunk
/// with the record checks and the writes), with the decoded values. Empty when a check fails.
std::vector<float> walk_like_the_gpu(const Codec& c, const std::vector<uint8_t>& p) {
  const SDitherOptions& sp = c.spec().options<SDitherOptions>();
  const int64_t n = c.num_elems();
  const std::vector<int64_t> blocks = block_offsets(c.layout(), sp.block);
  const int64_t m = static_cast<int64_t>(blocks.size()) - 1;
  const int64_t chunks = (n + sp.chunk - 1) / sp.chunk;
  const int64_t worst = static_cast<int64_t>(c.encoded_bits()) - 32 * (m + 1 + chunks);
  const uint32_t code = sp.code == EliasCode::kDelta ? detail::kEliasDelta : detail::kEliasGamma;
  std::vector<uint32_t> w(p.size() / 4);
  std::memcpy(w.data(), p.data(), p.size());
  std::vector<float> scales(static_cast<size_t>(m));
  std::memcpy(scales.data(), p.data(), 4 * static_cast<size_t>(m));
  const uint32_t total = w[static_cast<size_t>(m)];
  const uint32_t* dir = w.data() + m + 1;
  const uint32_t* stream = dir + chunks;
  const int64_t words = static_cast<int64_t>(w.size()) - (m + 1 + chunks);
  if (static_cast<int64_t>(total) > worst) return {};
  for (float s : scales)
    if (!std::isfinite(s) || s < 0.0f || std::signbit(s)) return {};
  for (int64_t k = 0; k < chunks; ++k)
    if ((k == 0 && dir[0] != 0u) || (k > 0 && dir[k] < dir[k - 1]) || dir[k] > total) return {};
  for (int64_t k = total / 32; k < words; ++k) {
    const uint32_t keep = (k == total / 32 && total % 32 != 0) ? ((1u << (total % 32)) - 1u) : 0u;
    if ((stream[k] & ~keep) != 0u) return {};
  }
  // The decode kernel's walk (detail::sdither_decode_chunk), each element put exactly once.
  std::vector<float> out(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
  std::vector<int> puts(static_cast<size_t>(n), 0);
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t begin = k * sp.chunk;
    const int64_t len = std::min(n - begin, sp.chunk);
    const uint64_t end = k + 1 < chunks ? dir[k + 1] : total;
    const int64_t b = std::upper_bound(blocks.begin(), blocks.end(), begin) - blocks.begin() - 1;
    int64_t expect = begin;
    const uint32_t st = detail::sdither_decode_chunk(stream, dir[k], end, code, sp.levels, begin, len, scales.data(),
                                                     blocks.data(), b, [&](int64_t i, float v) {
                                                       EXPECT_EQ(i, expect) << "elements out of order";
                                                       expect = i + 1;
                                                       out[static_cast<size_t>(i)] = v;
                                                       ++puts[static_cast<size_t>(i)];
                                                     });
    if (st != detail::kSdOk) return {};
    EXPECT_EQ(expect, begin + len) << "chunk " << k << " not written to its end";
  }
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(puts[static_cast<size_t>(i)], 1) << "element " << i;
  return out;
}

}  // namespace

TEST(SDitherFuzzTest, SharedChunkParserAgreesWithTheCodec) {
  // detail::sdither_walk_chunk is the parser of the GPU decode: on valid and bit-flipped payloads it
  // accepts exactly what the codec accepts and decodes to the same bits.
  std::mt19937_64 rng(20240602);
  int rejected = 0;
  for (const char* spec : {"sdither:levels=3,block=50,chunk=32", "sdither:levels=1,norm=linf,code=delta,chunk=16",
                           "sdither:levels=6,norm=linf,block=40,code=delta,chunk=7"}) {
    const Layout layout(std::vector<int64_t>{130, 0, 70});
    auto c = make_codec(spec, layout);
    const auto good = test::encode(*c, input(layout.num_elems(), 5), RngKey{2, 1, 0, 0});
    for (int t = 0; t < 400; ++t) {
      auto bad = good;
      const int flips = t < 2 ? 0 : 1 + static_cast<int>(rng() % 2);
      for (int f = 0; f < flips; ++f) {
        const size_t bit = rng() % (8 * bad.size());
        bad[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      }
      if (t == 1) {  // block 0's scale set to +0 while its records stay: rejected (no bit flip finds it)
        std::fill(bad.begin(), bad.begin() + 4, uint8_t{0});
        EXPECT_THROW(c->validate(bad), Error) << spec;
      }
      const std::vector<float> shared = walk_like_the_gpu(*c, bad);
      std::vector<float> out(static_cast<size_t>(layout.num_elems()));
      bool accepted = true;
      try {
        c->decode(bad, RngKey{}, out);
      } catch (const Error&) {
        accepted = false;
        ++rejected;
      }
      ASSERT_EQ(!shared.empty(), accepted) << spec << " case " << t;
      if (accepted) {
        ASSERT_TRUE(bitwise_equal(shared, out)) << spec << " case " << t;
      }
    }
  }
  EXPECT_GT(rejected, 300);
}

TEST(SDitherFuzzTest, TableWalkReportsWhatTheExactParserFinds) {
  // The CPU walk reads most records through a table of their first bits; flips inside the record
  // stream (the header stays valid) must give the error of the first chunk that the exact parser
  // (detail::sdither_walk_chunk, read bit by bit) rejects, with its chunk number, and on success
  // the same values (s up to 4096, gamma and delta, chunks long and short).
  std::mt19937_64 rng(20240603);
  const char* const reasons[] = {"",
                                 "over-long Elias prefix of a gap",
                                 "a gap code runs past the end of its chunk",
                                 "a gap runs past the end of its chunk",
                                 "a record has no sign bit",
                                 "over-long Elias prefix of a level",
                                 "a level code runs past the end of its chunk",
                                 "level above",
                                 "whose scale is 0"};
  int rejected = 0;
  for (const char* spec : {"sdither:levels=4,norm=linf,block=4096", "sdither:levels=4,norm=linf,code=delta,chunk=100",
                           "sdither:levels=1,norm=linf,chunk=64", "sdither:levels=37,norm=l2,block=300,chunk=1000",
                           "sdither:levels=4000,norm=linf,code=delta,chunk=5000"}) {
    const Layout layout(std::vector<int64_t>{9000, 3001});
    auto c = make_codec(spec, layout);
    const SDitherOptions& sp = c->spec().options<SDitherOptions>();
    const int64_t n = layout.num_elems();
    const auto good = test::encode(*c, input(n, 6), RngKey{3, 1, 0, 0});
    const int64_t m = c->num_scales();
    const int64_t chunks = (n + sp.chunk - 1) / sp.chunk;
    const size_t stream_off = 4 * static_cast<size_t>(m + 1 + chunks);
    uint32_t total = 0;
    std::memcpy(&total, good.data() + 4 * m, 4);
    ASSERT_GT(total, 0u) << spec;
    for (int t = 0; t < 150; ++t) {
      auto bad = good;
      const int flips = t == 0 ? 0 : 1 + static_cast<int>(rng() % 3);
      for (int f = 0; f < flips; ++f) {
        const uint64_t bit = rng() % total;
        bad[stream_off + bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      }
      // the exact parser's verdict: the first chunk that fails, and why
      std::vector<uint32_t> w((bad.size() - stream_off) / 4 + 3, 0u);
      std::memcpy(w.data(), bad.data() + stream_off, bad.size() - stream_off);
      std::vector<uint32_t> dir(static_cast<size_t>(chunks));
      std::memcpy(dir.data(), bad.data() + 4 * (m + 1), 4 * dir.size());
      const uint32_t code = sp.code == EliasCode::kDelta ? detail::kEliasDelta : detail::kEliasGamma;
      std::string want;
      for (int64_t k = 0; k < chunks && want.empty(); ++k) {
        const uint64_t end = k + 1 < chunks ? dir[static_cast<size_t>(k) + 1] : total;
        const int64_t len = std::min(n - k * sp.chunk, sp.chunk);
        const uint32_t st = detail::sdither_walk_chunk(w.data(), dir[static_cast<size_t>(k)], end, code, sp.levels, len,
                                                       [](int64_t, bool, uint32_t) { return true; });
        if (st != detail::kSdOk)
          want = std::string(reasons[st]) + (st == detail::kSdLevelTooBig ? " " + std::to_string(sp.levels) : "") +
                 " in chunk " + std::to_string(k);
      }
      std::vector<float> out(static_cast<size_t>(n), 3.0f);
      try {
        c->decode(bad, RngKey{}, out);
        EXPECT_EQ(want, "") << spec << " case " << t << ": accepted";
      } catch (const Error& e) {
        ++rejected;
        EXPECT_NE(want, "") << spec << " case " << t << ": " << e.what();
        EXPECT_NE(std::string(e.what()).find(want), std::string::npos)
            << spec << " case " << t << ": expected '" << want << "' in: " << e.what();
      }
    }
  }
  EXPECT_GT(rejected, 300);
}

// -------------------------------------------------------------------------------- T1 and T16

TEST(SDitherStatsTest, T1Unbiased) {
  // |mean - x|^2 <= 5 V / K with V the exact §2.2 variance (sdither decodes exactly as dither).
  for (const auto& [spec, d, draws] : {std::tuple{"sdither:levels=1,norm=l2", int64_t{64}, 20000},
                                       std::tuple{"sdither:levels=4,norm=linf,block=16,code=delta", int64_t{64}, 20000},
                                       std::tuple{"sdither:levels=2,norm=l2,chunk=100", int64_t{1024}, 5000}}) {
    auto c = make_codec(spec, Layout(d));
    const auto x = test::gaussian(d, 300 + static_cast<uint64_t>(d));
    std::vector<float> scales(static_cast<size_t>(c->num_scales()));
    c->compute_scales(x, scales);
    const SDitherOptions& o = c->spec().options<SDitherOptions>();
    const auto blocks = block_offsets(c->layout(), o.block);
    const double s = o.levels;
    double v = 0;
    for (size_t b = 0; b + 1 < blocks.size(); ++b)
      for (int64_t i = blocks[b]; i < blocks[b + 1]; ++i) {
        const double r = std::min(s, s * std::fabs(static_cast<double>(x[static_cast<size_t>(i)])) / scales[b]);
        v += (scales[b] / s) * (scales[b] / s) * (r - std::floor(r)) * (1 - (r - std::floor(r)));
      }
    std::vector<double> mean(x.size(), 0.0);
    std::vector<uint8_t> p(c->encoded_bytes());
    std::vector<float> y(x.size());
    for (int k = 0; k < draws; ++k) {
      const RngKey key{55, 1, static_cast<uint32_t>(k), 0};
      c->encode(x, key, p);
      c->decode(p, key, y);
      for (size_t i = 0; i < x.size(); ++i) mean[i] += y[i];
    }
    double bias = 0;
    for (size_t i = 0; i < x.size(); ++i) bias += (mean[i] / draws - x[i]) * (mean[i] / draws - x[i]);
    EXPECT_LE(bias, 5.0 * v / draws) << spec;
    EXPECT_LE(v, c->guarantee().omega * test::sq_norm(x)) << spec;
  }
}

TEST(SDitherStatsTest, T16SizesFollowTheSpecFormula) {
  // §5.2(a): 32 m + 32 ceil(d/C) + sum_nz [len(g) + 1 + [s>1] len(xi)], plus gcomp's 32-bit
  // total-length word; the buffer is the worst case.
  for (int64_t d : {1, 31, 64, 1000, 1024, 4097}) {
    for (const char* spec :
         {"sdither", "sdither:levels=4,norm=linf,block=16,chunk=100", "sdither:levels=3,code=delta,chunk=7"}) {
      auto c = make_codec(spec, Layout(d));
      auto di = make_codec(dither_twin(c->spec()), Layout(d));
      const auto x = test::gaussian(d, 8);
      const RngKey key{3, 1, 4, 0};
      uint64_t formula = 0;
      (void)reference_payload(*c, levels_from_dither(*di, test::encode(*di, x, key)), &formula);
      const double m = static_cast<double>(c->num_scales());
      const double chunks =
          std::ceil(static_cast<double>(d) / static_cast<double>(c->spec().options<SDitherOptions>().chunk));
      const auto p = test::encode(*c, x, key);
      EXPECT_EQ(c->payload_bits(p), 32 * m + 32 * chunks + static_cast<double>(formula) + 32) << spec << " d=" << d;
      EXPECT_EQ(8.0 * static_cast<double>(c->encoded_bytes()), 32.0 * std::ceil(c->encoded_bits() / 32.0));
    }
  }
}

TEST(SDitherStatsTest, SharedScalesAsDither) {
  // encode_with_scales (scaler sharing) quantizes exactly as dither with the same scales.
  auto sd = make_codec("sdither:levels=2,norm=linf,block=8", Layout(40));
  auto di = make_codec("dither:levels=2,norm=linf,block=8", Layout(40));
  const auto x = test::gaussian(40, 6);
  std::vector<float> own(5);
  sd->compute_scales(x, own);
  for (float& s : own) s *= 1.5f;
  std::vector<uint8_t> ps(sd->encoded_bytes()), pd(di->encoded_bytes());
  sd->encode_with_scales(x, own, RngKey{2, 0, 0, 0}, ps);
  di->encode_with_scales(x, own, RngKey{2, 0, 0, 0}, pd);
  EXPECT_TRUE(bitwise_equal(test::decode(*sd, ps, RngKey{}), test::decode(*di, pd, RngKey{})));
}

// ------------------------------------------------------ the GPU encode's scan (sdither_scan.hpp)

/// Record bits of every element (0 for a zero) and of each gap code alone, from the definition:
/// the gap counts from the previous nonzero of the chunk, or from the chunk start - 1.
struct RecordBits {
  std::vector<int64_t> record;
  std::vector<int64_t> gap;
};

RecordBits record_bits_of(const std::vector<uint32_t>& level, int64_t chunk, bool use_delta, uint32_t levels) {
  const int64_t n = static_cast<int64_t>(level.size());
  RecordBits r{std::vector<int64_t>(level.size(), 0), std::vector<int64_t>(level.size(), 0)};
  int64_t prev = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (i % chunk == 0) prev = i - 1;
    const uint32_t l = level[static_cast<size_t>(i)];
    if (l == 0) continue;
    const uint64_t g = static_cast<uint64_t>(i - prev);
    r.gap[static_cast<size_t>(i)] = use_delta ? ref_len_delta(g) : ref_len_gamma(g);
    r.record[static_cast<size_t>(i)] =
        r.gap[static_cast<size_t>(i)] + 1 + (levels > 1 ? (use_delta ? ref_len_delta(l) : ref_len_gamma(l)) : 0);
    prev = i;
  }
  return r;
}

uint32_t sd_levels(const Codec& sd) { return sd.spec().options<SDitherOptions>().levels; }

/// The span of elements [a, b) by the sequential definition (independent of the combine).
detail::SDitherSpan span_by_definition(const std::vector<uint32_t>& level, const RecordBits& r, int64_t a, int64_t b) {
  detail::SDitherSpan s{-1, -1, 0};
  for (int64_t i = a; i < b; ++i) {
    if (level[static_cast<size_t>(i)] == 0) continue;
    if (s.first < 0) {
      s.first = i;
      s.rest -= r.gap[static_cast<size_t>(i)];
    }
    s.last = i;
    s.rest += r.record[static_cast<size_t>(i)];
  }
  return s;
}

bool same_span(const detail::SDitherSpan& a, const detail::SDitherSpan& b) {
  return a.first == b.first && a.last == b.last && a.rest == b.rest;
}

std::string show(const detail::SDitherSpan& s) {
  return "{" + std::to_string(s.first) + ", " + std::to_string(s.last) + ", " + std::to_string(s.rest) + "}";
}

/// Levels with long zero runs (whole empty tiles), dense runs and single nonzeros at chunk edges.
std::vector<uint32_t> scan_levels(int64_t n, uint32_t levels, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint32_t> level(static_cast<size_t>(n), 0);
  int64_t i = 0;
  while (i < n) {
    const int64_t run = static_cast<int64_t>(rng() % 9000) + 1;
    const int kind = static_cast<int>(rng() % 4);  // 0: zeros, 1: dense, 2: sparse, 3: one nonzero
    for (int64_t k = i; k < std::min(n, i + run); ++k) {
      const bool on = kind == 1 || (kind == 2 && rng() % 23 == 0) || (kind == 3 && k == i);
      if (on) level[static_cast<size_t>(k)] = static_cast<uint32_t>(rng() % levels) + 1;
    }
    i += kind == 3 ? 1 : run;
  }
  return level;
}

TEST(SDitherScanTest, CombineIsTheSequentialDefinition) {
  // The combine of the GPU encode's scan on spans of random sequences: the span of [a, b) combined
  // with the span of [b, c) is the span of [a, c) by the definition (so the combine is
  // associative on adjacent spans), the empty span is its identity on both sides, the thread walk
  // sdither_items_span is the definition, and sdither_span_bits of [0, b) is the stream position
  // of element b. Chunk sizes put chunk starts inside tiles, at their edges and at every element.
  std::mt19937_64 rng(99);
  const detail::SDitherSpan none = detail::sdither_span_none();
  for (const int64_t chunk : {int64_t{1}, int64_t{3}, int64_t{16}, int64_t{31}, int64_t{4096}, int64_t{5000}}) {
    for (const bool use_delta : {false, true}) {
      for (const uint32_t levels : {1u, 4u, 1000u}) {
        const int64_t n = 3 * 4096 + 77;
        const auto level = scan_levels(n, levels, rng());
        const RecordBits r = record_bits_of(level, chunk, use_delta, levels);
        const detail::SDitherCombine op{chunk, use_delta ? detail::kEliasDelta : detail::kEliasGamma};
        std::vector<int64_t> pos(static_cast<size_t>(n) + 1, 0);  // stream position of each element
        for (int64_t i = 0; i < n; ++i)
          pos[static_cast<size_t>(i) + 1] = pos[static_cast<size_t>(i)] + r.record[static_cast<size_t>(i)];
        const std::string where =
            "chunk " + std::to_string(chunk) + (use_delta ? " delta" : " gamma") + " levels " + std::to_string(levels);
        for (int trial = 0; trial < 3000; ++trial) {
          int64_t cut[4];
          for (int64_t& c : cut) c = static_cast<int64_t>(rng() % static_cast<uint64_t>(n + 1));
          if (trial % 5 == 0) cut[1] = cut[0];                    // empty spans
          if (trial % 7 == 0) cut[2] = (cut[2] / chunk) * chunk;  // a cut at a chunk start
          std::sort(cut, cut + 4);
          const auto x = span_by_definition(level, r, cut[0], cut[1]);
          const auto y = span_by_definition(level, r, cut[1], cut[2]);
          const auto z = span_by_definition(level, r, cut[2], cut[3]);
          const auto xy = span_by_definition(level, r, cut[0], cut[2]);
          ASSERT_TRUE(same_span(op(x, y), xy)) << where << ": " << show(op(x, y)) << " vs " << show(xy);
          ASSERT_TRUE(same_span(op(op(x, y), z), op(x, op(y, z)))) << where;
          ASSERT_TRUE(same_span(op(x, op(y, z)), span_by_definition(level, r, cut[0], cut[3]))) << where;
          ASSERT_TRUE(same_span(op(none, x), x) && same_span(op(x, none), x)) << where;
          ASSERT_EQ(detail::sdither_span_bits(span_by_definition(level, r, 0, cut[1]), op.chunk, op.code),
                    pos[static_cast<size_t>(cut[1])])
              << where;
        }
        for (int64_t i0 = 0; i0 < n; i0 += 16) {  // the thread walk over 16 items (those past n are 0)
          std::array<uint32_t, 16> items{};
          for (int j = 0; j < 16 && i0 + j < n; ++j)
            items[static_cast<size_t>(j)] = detail::sdither_item(level[static_cast<size_t>(i0 + j)], j % 3 == 0);
          const auto walk = detail::sdither_items_span<16>(
              i0, [&](int j) { return items[static_cast<size_t>(j)]; }, levels, op);
          ASSERT_TRUE(same_span(walk, span_by_definition(level, r, i0, std::min(n, i0 + 16)))) << where << " i0 " << i0;
        }
      }
    }
  }
}

/// The sdither payload as cuda/sdither/sdither_kernels.cuh builds it, run on the CPU with the
/// shared functions: tiles of 256 threads x 16 items; each thread's span; a tile's exclusive
/// prefixes from a Hillis-Steele scan of its threads' spans (another association than the
/// sequential walk) after the tile prefix, which is built as the look-back does (the partial
/// aggregates of the preceding tiles, newest first, until an inclusive prefix); each thread writes
/// through SDitherWordWriter into the zeroed stream. Checks on the side that a word a writer
/// stores whole receives no bits from anyone else.
std::vector<uint8_t> kernel_twin_payload(const Codec& sd, const Levels& lv) {
  constexpr int kItems = 16;
  constexpr int kBlock = 256;
  constexpr int64_t kTile = kItems * kBlock;
  const SDitherOptions& o = sd.spec().options<SDitherOptions>();
  const int64_t n = sd.num_elems();
  const detail::SDitherCombine op{o.chunk, o.code == EliasCode::kDelta ? detail::kEliasDelta : detail::kEliasGamma};
  const int64_t m = sd.num_scales();
  const int64_t chunks = (n + o.chunk - 1) / o.chunk;
  std::vector<uint8_t> out(sd.encoded_bytes(), 0);
  for (int64_t b = 0; b < m; ++b) std::memcpy(out.data() + 4 * b, &lv.scales[static_cast<size_t>(b)], 4);
  if (n == 0) return out;
  const size_t words = (out.size() - 4 * static_cast<size_t>(m + 1 + chunks)) / 4;
  std::vector<uint32_t> dir(static_cast<size_t>(chunks), 0xffffffffu), stream(words, 0);
  std::vector<int> stored_by(words, -1), ored_by(words, -1);
  const int64_t tiles = (n + kTile - 1) / kTile;
  std::vector<detail::SDitherSpan> aggregate(static_cast<size_t>(tiles)), inclusive(static_cast<size_t>(tiles));
  uint32_t total = 0;
  for (int64_t t = 0; t < tiles; ++t) {
    std::vector<std::array<uint32_t, kItems>> items(kBlock);
    std::vector<detail::SDitherSpan> own(kBlock);
    for (int th = 0; th < kBlock; ++th) {
      const int64_t i0 = t * kTile + th * kItems;
      for (int j = 0; j < kItems; ++j) {
        const int64_t i = i0 + j;
        items[static_cast<size_t>(th)][static_cast<size_t>(j)] =
            i < n ? detail::sdither_item(lv.level[static_cast<size_t>(i)], lv.negative[static_cast<size_t>(i)]) : 0u;
      }
      own[static_cast<size_t>(th)] = detail::sdither_items_span<kItems>(
          i0, [&](int j) { return items[static_cast<size_t>(th)][static_cast<size_t>(j)]; }, sd_levels(sd), op);
    }
    std::vector<detail::SDitherSpan> incl = own;  // Hillis-Steele inclusive scan of the threads
    for (int d = 1; d < kBlock; d *= 2) {
      const auto before = incl;
      for (int th = d; th < kBlock; ++th)
        incl[static_cast<size_t>(th)] = op(before[static_cast<size_t>(th - d)], before[static_cast<size_t>(th)]);
    }
    aggregate[static_cast<size_t>(t)] = incl[kBlock - 1];
    detail::SDitherSpan prefix = detail::sdither_span_none();  // the look-back
    for (int64_t q = t - 1; q >= 0; --q) {
      if (q == 0 || q % 3 == 0) {  // inclusive prefixes published for some tiles only
        prefix = op(inclusive[static_cast<size_t>(q)], prefix);
        break;
      }
      prefix = op(aggregate[static_cast<size_t>(q)], prefix);
    }
    inclusive[static_cast<size_t>(t)] = op(prefix, aggregate[static_cast<size_t>(t)]);
    for (int th = 0; th < kBlock; ++th) {
      const int64_t i0 = t * kTile + th * kItems;
      const detail::SDitherSpan before = th == 0 ? prefix : op(prefix, incl[static_cast<size_t>(th - 1)]);
      const auto lo = static_cast<uint64_t>(detail::sdither_span_bits(before, op.chunk, op.code));
      const auto hi =
          static_cast<uint64_t>(detail::sdither_span_bits(op(before, own[static_cast<size_t>(th)]), op.chunk, op.code));
      const int writer = static_cast<int>(t * kBlock + th);
      auto store = [&](uint64_t w, uint32_t bits) {
        EXPECT_EQ(stored_by[w], -1) << "word " << w << " stored twice";
        EXPECT_EQ(ored_by[w], -1) << "word " << w << " stored after an OR";
        stored_by[w] = writer;
        stream[w] = bits;
      };
      auto or_word = [&](uint64_t w, uint32_t bits) {
        EXPECT_EQ(stored_by[w], -1) << "word " << w << " ORed after a store";
        ored_by[w] = writer;
        stream[w] |= bits;
      };
      detail::SDitherWordWriter<decltype(store), decltype(or_word)> writer_words{store, or_word, lo, hi};
      const uint64_t end = detail::sdither_write_items<kItems>(
          writer_words, [&](int64_t c, uint64_t bit) { dir[static_cast<size_t>(c)] = static_cast<uint32_t>(bit); }, i0,
          [&](int j) { return items[static_cast<size_t>(th)][static_cast<size_t>(j)]; }, before, n, sd_levels(sd), op);
      writer_words.flush();
      EXPECT_EQ(end, hi);
      if (t == tiles - 1 && th == kBlock - 1) total = static_cast<uint32_t>(hi);
    }
  }
  uint8_t* h = out.data() + 4 * m;
  std::memcpy(h, &total, 4);
  std::memcpy(h + 4, dir.data(), 4 * dir.size());
  std::memcpy(h + 4 + 4 * dir.size(), stream.data(), 4 * stream.size());
  return out;
}

TEST(SDitherScanTest, KernelTwinGivesTheCodecPayload) {
  // Tiles with no nonzero, tiles of nonzeros only, chunks smaller and larger than a tile, chunk
  // starts inside and at the edges of tiles and threads, both codes and several levels.
  for (const char* spec : {"sdither", "sdither:code=delta", "sdither:levels=4,norm=linf,code=delta,chunk=32",
                           "sdither:levels=7,norm=l2,block=33,chunk=31", "sdither:levels=1,norm=linf,block=10,chunk=1",
                           "sdither:levels=100,norm=l2,chunk=64,code=delta", "sdither:levels=2,norm=linf,chunk=4096",
                           "sdither:levels=3,norm=l2,block=512,chunk=5000", "sdither:levels=1,norm=l2,chunk=16"}) {
    for (const int64_t n :
         {int64_t{1}, int64_t{17}, int64_t{4096}, int64_t{4097}, int64_t{3 * 4096 + 1000}, int64_t{40000}}) {
      auto sd = make_codec(spec, Layout(n));
      auto di = make_codec(dither_twin(sd->spec()), Layout(n));
      for (const uint64_t seed : {5ull, 6ull}) {
        auto x = input(n, seed);
        if (n > 3 * 4096) std::fill(x.begin() + 4096, x.begin() + 2 * 4096 + 100, 0.0f);  // an empty tile
        const RngKey key{seed, 2, 1, 0};
        const auto lv = levels_from_dither(*di, test::encode(*di, x, key));
        EXPECT_TRUE(bytes_equal(kernel_twin_payload(*sd, lv), test::encode(*sd, x, key))) << spec << " n " << n;
      }
    }
  }
}

}  // namespace
