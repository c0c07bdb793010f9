// SPDX-License-Identifier: Apache-2.0
// The CPU codecs' SIMD kernels and thread pool change no bit: for every instruction set this CPU
// runs (Highway targets, and the scalar reference kernels written from the element math) and for
// 1, 2, 3 and 5 threads, encode, decode, decode_accumulate, decode_reduce and compute_scales give
// the same bytes. Sizes reach past the parallel threshold and cut blocks, groups and pieces
// unevenly. The kernels are also compared one by one with the reference on inputs built to sit on
// level boundaries.
#include "common/test_util.hpp"

#include "host/codecs/kernels.hpp"
#include "host/codecs/pieces.hpp"
#include "host/codecs/registry.hpp"
#include "host/codecs/select.hpp"
#include "host/common/thread_pool.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/grid.hpp>
#include <gcomp/threads.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

using namespace gcomp;
namespace kernels = gcomp::detail::kernels;

namespace {

const char* const kSpecs[] = {
    "identity",
    "dither:levels=4,norm=l2,block=512",
    "dither:levels=1,norm=linf,block=4096",
    "dither:levels=3,norm=l1,block=100",
    "dither:levels=300,norm=l2,block=1000",
    "dither:levels=2,norm=lp,p=3,block=777",
    "terngrad",
    "terngrad:clip=2.5",
    "natdither:levels=3,norm=l2",
    "natdither:levels=5,norm=linf,block=333",
    "natdither:levels=80,norm=l2,block=5000",
    "sign",
    "sign:block=4096",
    "sign:block=1000,scale=none",
    "natural",
    "grid:step=0.00390625,bits=16",
    "grid:step=0.001,bits=8",
    "grid:step=0.01,bits=11",
    "grid:step=0.1,bits=32",
    "topk:ratio=0.01",
    "randk:ratio=0.01",
    "topk:ratio=0.3",  // k >= 65536 at the larger layout: index unpacking and scatter on the pool
    "randk:ratio=0.25",
    "sdither:levels=4,norm=linf,block=4096",
    "sdither:levels=1,norm=l2",
    "sdither:levels=2,norm=l2,block=1000,chunk=300",
};

/// Gaussian with zeros, ties, tiny and huge values, and values on the level boundaries of
/// dither:levels=4 (x = k/4 of the block scale is hit when the block max is 1).
std::vector<float> make_input(int64_t n, uint64_t seed) {
  std::vector<float> x = test::gaussian(n, seed);
  for (int64_t i = 0; i < n; ++i) {
    if (i % 11 == 3) x[static_cast<size_t>(i)] = 0.0f;
    if (i % 13 == 5) x[static_cast<size_t>(i)] = -0.0f;
    if (i % 17 == 7) x[static_cast<size_t>(i)] = 0.25f * static_cast<float>(i % 5);
    if (i % 29 == 1) x[static_cast<size_t>(i)] *= 1e-30f;
    if (i % 31 == 2) x[static_cast<size_t>(i)] *= 1e20f;
  }
  return x;
}

struct Results {
  std::vector<uint8_t> payload;
  std::vector<float> scales, decoded, accumulated, reduced;
};

Results run(const Codec& c, const std::vector<float>& x) {
  Results r;
  const RngKey key{0x1234567890abcdefull, 3, 17, 0};
  r.payload = test::encode(c, x, key);
  if (c.num_scales() > 0 && c.spec().id() != CodecId::kSign && c.spec().id() != CodecId::kSDither) {
    r.scales.assign(static_cast<size_t>(c.num_scales()), 0.0f);
    c.compute_scales(x, r.scales);
  }
  r.decoded = test::decode(c, r.payload, key);
  r.accumulated = x;
  c.decode_accumulate(r.payload, key, 0.75f, r.accumulated);
  // decode_reduce of three payloads (ranks 0..2) into a non-zero output
  std::vector<std::vector<uint8_t>> ps;
  std::vector<RngKey> keys;
  for (uint32_t rank = 0; rank < 3; ++rank) {
    keys.push_back(RngKey{0x1234567890abcdefull, rank, 17, 0});
    ps.push_back(test::encode(c, x, keys.back()));
  }
  std::vector<std::span<const uint8_t>> spans(ps.begin(), ps.end());
  const std::vector<float> weights = {1.0f, -0.5f, 0.3f};
  r.reduced = x;
  c.decode_reduce(spans, keys, weights, r.reduced);
  // ... which is decode_accumulate of each payload in turn
  std::vector<float> seq = x;
  for (size_t j = 0; j < ps.size(); ++j) c.decode_accumulate(ps[j], keys[j], weights[j], seq);
  EXPECT_TRUE(test::bitwise_equal(r.reduced, seq)) << c.spec().canonical() << ": decode_reduce";
  return r;
}

void expect_same(const Results& a, const Results& b, const std::string& what) {
  EXPECT_TRUE(test::bytes_equal(a.payload, b.payload)) << what << ": payload";
  EXPECT_TRUE(test::bitwise_equal(a.scales, b.scales)) << what << ": scales";
  EXPECT_TRUE(test::bitwise_equal(a.decoded, b.decoded)) << what << ": decode";
  EXPECT_TRUE(test::bitwise_equal(a.accumulated, b.accumulated)) << what << ": decode_accumulate";
  EXPECT_TRUE(test::bitwise_equal(a.reduced, b.reduced)) << what << ": decode_reduce";
}

class KernelTargets : public testing::Test {
 protected:
  void TearDown() override {
    kernels::force_target(0);
    set_cpu_threads(0);
    detail::set_stream_min_bytes(-1);
  }
};

}  // namespace

TEST_F(KernelTargets, EveryInstructionSetAndThreadCountGivesTheSameBits) {
  const auto targets = kernels::available_targets();
  ASSERT_FALSE(targets.empty());
  EXPECT_EQ(targets.back().second, "scalar");
  // Sizes: below and above the parallel threshold (2^18), odd, and a layout of uneven segments.
  // Sizes: below the parallel threshold (2^18), and above it in uneven segments. The thread
  // count only changes which thread runs a piece, so it is varied on the best target.
  const std::vector<std::vector<int64_t>> layouts = {{1000}, {70001, 3, 131072 + 5, 64, 100000}};
  for (const char* spec : kSpecs) {
    for (const auto& segs : layouts) {
      const Layout layout(segs);
      const auto codec = make_codec(spec, layout);
      const std::vector<float> x = make_input(layout.num_elems(), 99);
      kernels::force_target(-1);
      set_cpu_threads(1);
      const Results want = run(*codec, x);
      for (size_t t = 0; t + 1 < targets.size(); ++t) {
        const auto& [id, name] = targets[t];
        if (name == "SCALAR") continue;  // Highway's fallback target runs the reference kernels
        kernels::force_target(id);
        for (int threads : {1, 2, 3, 5}) {
          if (threads > 1 && (t > 0 || layout.num_elems() < detail::kParallelMinElems)) continue;
          set_cpu_threads(threads);
          expect_same(want, run(*codec, x),
                      std::string(spec) + " n=" + std::to_string(layout.num_elems()) + " " + name +
                          " threads=" + std::to_string(threads));
        }
      }
    }
  }
}

TEST_F(KernelTargets, QuantizeMatchesTheElementMathOnLevelBoundaries) {
  // Inputs that put s|y|/nu on, or one float away from, k + u for the lane's own u.
  std::mt19937_64 rng(3);
  const int64_t n = 4096;
  std::vector<uint32_t> words(n);
  for (auto& w : words) w = static_cast<uint32_t>(rng());
  for (int64_t i = 5; i < n; i += 97) words[i] &= 0xffu;  // u = 0: any r > 0 rounds up
  for (uint32_t s : {1u, 3u, 4u, 7u, 16u, 1000u, 1u << 20}) {
    for (bool natural : {false, true}) {
      if (natural && s > 100) continue;
      const float nu = std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f, static_cast<int>(rng() % 40) - 20);
      std::vector<float> x(n);
      for (int64_t i = 0; i < n; ++i) {
        const double u = detail::uniform01(words[i]);
        const double k = static_cast<double>(rng() % (s + 1));
        double r = natural ? std::ldexp(1.0 + u, -static_cast<int>(rng() % 8) - 1) : (k + u) / s;
        float y = static_cast<float>(r * nu);
        const int shift = static_cast<int>(i % 3) - 1;
        if (shift < 0) y = std::nextafter(y, 0.0f);
        if (shift > 0) y = std::nextafter(y, INFINITY);
        x[i] = (i & 4) ? -y : y;
        // with u = 0, a quotient that underflows single precision must still give level 1
        if (i % 97 == 5) x[i] = (i & 8) ? -1.4e-45f : std::ldexp(nu, -140);
      }
      std::vector<uint32_t> want(n), got(n);
      kernels::ref::quantize(natural, x.data(), n, nu, s, words.data(), want.data());
      // quantize_planes with scales varying per element (a block per 7 elements, one of them 0)
      std::vector<float> nus(n), recips(n);
      for (int64_t i = 0; i < n; ++i) {
        nus[i] = (i / 7) % 5 == 4 ? 0.0f : nu * (1.0f + static_cast<float>((i / 7) % 5) / 8.0f);
        recips[i] = kernels::plane_reciprocal(natural, nus[i], s);
      }
      const int nbits = static_cast<int>(detail::ceil_log2_u64(uint64_t{s} + 1));
      std::vector<uint32_t> want_planes(n / 32 * (1 + nbits)), got_planes(want_planes.size());
      const bool planes = s <= kernels::kQuantizePlanesMaxLevels;
      if (planes)
        kernels::ref::quantize_planes(natural, x.data(), nus.data(), recips.data(), words.data(), n / 32, s, nbits,
                                      want_planes.data(), false);
      // ... and with one scale for every element (uniform: nu and its reciprocal in registers),
      // against the per-element form with that scale everywhere; a zero scale too.
      std::vector<std::vector<uint32_t>> want_uniform;
      const float uniform_nus[2] = {nu, 0.0f};
      for (float un : uniform_nus) {
        const std::vector<float> fill_nu(n, un), fill_rc(n, kernels::plane_reciprocal(natural, un, s));
        want_uniform.emplace_back(want_planes.size());
        if (planes)
          kernels::ref::quantize_planes(natural, x.data(), fill_nu.data(), fill_rc.data(), words.data(), n / 32, s,
                                        nbits, want_uniform.back().data(), false);
      }
      // dither_nonzeros (sdither's encode): the nonzeros of quantize, on these inputs and on the
      // inputs scaled down (most levels 0, the lanes its first test passes over), from index 7
      std::vector<float> small(x);
      for (int64_t i = 0; i < n; ++i)
        if (i % 5 != 0) small[i] = x[i] * std::ldexp(1.0f, -static_cast<int>(i % 30));
      std::vector<uint32_t> want_small(n);
      kernels::ref::quantize(false, small.data(), n, nu, s, words.data(), want_small.data());
      for (const auto& [id, name] : kernels::available_targets()) {
        kernels::force_target(id);
        kernels::quantize(natural, x.data(), n, nu, s, words.data(), got.data());
        EXPECT_EQ(want, got) << name << " s=" << s << " natural=" << natural;
        if (!natural) {
          for (const auto* in : {&x, &small}) {
            const std::vector<uint32_t>& levels = in == &x ? want : want_small;
            std::vector<uint32_t> want_idx, want_coded;
            for (int64_t i = 0; i < n; ++i)
              if ((levels[i] & ~kernels::kNegativeBit) != 0u) {
                want_idx.push_back(static_cast<uint32_t>(i + 7));
                want_coded.push_back(levels[i]);
              }
            std::vector<uint32_t> idx(n), coded(n);
            const int64_t count =
                kernels::dither_nonzeros(in->data(), n, nu, s, words.data(), 7, idx.data(), coded.data());
            idx.resize(static_cast<size_t>(count));
            coded.resize(static_cast<size_t>(count));
            EXPECT_EQ(want_idx, idx) << name << " nonzeros s=" << s << (in == &x ? "" : " small");
            EXPECT_EQ(want_coded, coded) << name << " nonzeros s=" << s << (in == &x ? "" : " small");
          }
        }
        if (!planes) continue;
        kernels::quantize_planes(natural, x.data(), nus.data(), recips.data(), words.data(), n / 32, s, nbits,
                                 got_planes.data());
        EXPECT_EQ(want_planes, got_planes) << name << " planes s=" << s << " natural=" << natural;
        for (size_t u = 0; u < 2; ++u) {
          const float rc = kernels::plane_reciprocal(natural, uniform_nus[u], s);
          kernels::quantize_planes(natural, x.data(), &uniform_nus[u], &rc, words.data(), n / 32, s, nbits,
                                   got_planes.data(), true);
          EXPECT_EQ(want_uniform[u], got_planes)
              << name << " uniform planes s=" << s << " natural=" << natural << " nu=" << uniform_nus[u];
        }
      }
    }
  }
}

TEST_F(KernelTargets, StreamingStoresCopyEveryAlignment) {
  // stream_copy and stream_zero against plain copies: source and destination at every offset
  // within a 64-byte line, lengths around the vector and line sizes.
  std::mt19937_64 rng(5);
  std::vector<uint8_t> src(4 * 300 + 64);
  for (auto& b : src) b = static_cast<uint8_t>(rng());
  for (const auto& [id, name] : kernels::available_targets()) {
    kernels::force_target(id);
    for (int64_t len : {0, 1, 3, 15, 16, 17, 31, 64, 100, 257}) {
      for (int so = 0; so < 8; ++so) {
        for (int d = 0; d < 16; ++d) {
          std::vector<float> buf(300 + 32, -1.0f), want(buf);
          std::memcpy(want.data() + d, src.data() + so, 4 * static_cast<size_t>(len));
          kernels::stream_copy(src.data() + so, len, buf.data() + d);
          kernels::stream_fence();
          ASSERT_TRUE(test::bitwise_equal(buf, want)) << name << " copy len=" << len << " src+" << so << " dst+" << d;
          std::fill(want.begin() + d, want.begin() + d + len, 0.0f);
          kernels::stream_zero(len, buf.data() + d);
          kernels::stream_fence();
          ASSERT_TRUE(test::bitwise_equal(buf, want)) << name << " zero len=" << len << " dst+" << d;
        }
      }
    }
  }
}

TEST_F(KernelTargets, StreamedDecodesGiveTheSameBits) {
  // Outputs above stream_min_bytes() are written through L1 scratch and streaming stores: with
  // the threshold at 0 every decode takes that path, into an output that is not vector-aligned.
  const Layout layout(std::vector<int64_t>{70001, 3, 131072 + 5, 64, 100000});
  const int64_t n = layout.num_elems();
  const RngKey key{0x1234567890abcdefull, 3, 17, 0};
  const std::vector<float> x = make_input(n, 7);
  for (const char* spec : kSpecs) {
    const auto codec = make_codec(spec, layout);
    const std::vector<uint8_t> payload = test::encode(*codec, x, key);
    detail::set_stream_min_bytes(-1);
    const std::vector<float> want = test::decode(*codec, payload, key);
    ASSERT_LT(4 * n, detail::stream_min_bytes());
    detail::set_stream_min_bytes(0);
    for (int threads : {1, 3}) {
      set_cpu_threads(threads);
      std::vector<float> buf(static_cast<size_t>(n) + 1, 5.0f);
      codec->decode(payload, key, std::span<float>(buf.data() + 1, static_cast<size_t>(n)));
      EXPECT_EQ(buf[0], 5.0f) << spec;
      EXPECT_TRUE(test::bitwise_equal(std::vector<float>(buf.begin() + 1, buf.end()), want))
          << spec << " threads=" << threads;
    }
  }
  detail::set_stream_min_bytes(-1);
}

TEST_F(KernelTargets, GridFieldKernelsMatchTheElementMathForEveryField) {
  // grid_decode_fields against grid_value of every 8- and 16-bit field (the SIMD kernels multiply
  // in float when the step is a normal float: the same bits as the double product), for steps
  // that are floats (a power of two, 0.1f, the smallest normal, one whose products overflow) and
  // steps that are not, at an unaligned start; grid_first_bad_field finds the most negative
  // pattern wherever it sits.
  std::vector<uint8_t> bytes(2 * 65536 + 3);
  for (int v = 0; v < 65536; ++v) {
    bytes[1 + 2 * static_cast<size_t>(v)] = static_cast<uint8_t>(v & 0xff);
    bytes[2 + 2 * static_cast<size_t>(v)] = static_cast<uint8_t>(v >> 8);
  }
  const double steps[] = {0.00390625,
                          static_cast<double>(0.1f),
                          0.1,
                          static_cast<double>(FLT_MIN),
                          1e-40,
                          3e34,
                          static_cast<double>(std::nextafter(FLT_MAX, 0.0f)),
                          1e-300};
  for (const auto& [id, name] : kernels::available_targets()) {
    kernels::force_target(id);
    for (uint32_t bits : {8u, 16u}) {
      const int64_t count = bits == 16 ? 65536 : 2 * 65536;
      for (double step : steps) {
        for (bool accumulate : {false, true}) {
          for (int64_t first : {int64_t{0}, int64_t{5}}) {
            const int64_t len = count - first;
            std::vector<float> got(static_cast<size_t>(len), 0.5f), want(got);
            kernels::grid_decode_fields(bytes.data() + 1, first, len, bits, step, -0.75f, accumulate, got.data());
            for (int64_t i = 0; i < len; ++i) {
              const uint8_t* f = bytes.data() + 1 + (first + i) * bits / 8;
              const int32_t level = bits == 8 ? static_cast<int8_t>(f[0]) : static_cast<int16_t>(f[0] | (f[1] << 8));
              const float v = detail::grid_value(level, step);
              want[static_cast<size_t>(i)] = accumulate ? detail::accumulate(0.5f, -0.75f, v) : v;
            }
            ASSERT_TRUE(test::bitwise_equal(got, want))
                << name << " bits=" << bits << " step=" << step << " accumulate=" << accumulate << " first=" << first;
          }
        }
      }
      // The most negative pattern at every position of a short stream, and nowhere.
      for (int64_t len : {1, 31, 64, 200, 1000}) {
        std::vector<uint8_t> f(static_cast<size_t>(len) * bits / 8 + 1, 0x7f);
        EXPECT_EQ(kernels::grid_first_bad_field(f.data() + 1, len, bits), -1) << name;
        for (int64_t at = 0; at < len; ++at) {
          std::vector<uint8_t> g = f;
          g[1 + static_cast<size_t>((at + 1) * bits / 8 - 1)] = 0x80;
          if (bits == 16) g[1 + static_cast<size_t>(2 * at)] = 0x00;
          if (at + 2 < len) g[1 + static_cast<size_t>((at + 3) * bits / 8 - 1)] = 0x80;  // a later one too
          ASSERT_EQ(kernels::grid_first_bad_field(g.data() + 1, len, bits), at) << name << " bits=" << bits;
        }
      }
    }
  }
}

TEST_F(KernelTargets, GridEncodeFieldsMatchTheElementMath) {
  // grid_encode_fields against grid_level (the division) on every target, both widths, with and
  // without streaming stores, at every alignment of the fields and lengths with tails: inputs on
  // and next to the ties of the rounding (the float bracket straddles and the division decides),
  // at and past the clamp, zeros, subnormals, huge values, and steps with no float reciprocal.
  std::mt19937_64 rng(21);
  const int64_t n = 3000;
  const double steps[] = {0.00390625, 0.001, 1.0 / 3.0, 1e-40, 1e-300, 1e300};
  for (const auto& [id, name] : kernels::available_targets()) {
    kernels::force_target(id);
    for (uint32_t bits : {8u, 16u}) {
      const int64_t lim = (int64_t{1} << (bits - 1)) - 1;
      for (double step : steps) {
        std::vector<float> x(n);
        for (int64_t i = 0; i < n; ++i) {
          const double k =
              static_cast<double>(static_cast<int64_t>(rng() % static_cast<uint64_t>(2 * lim + 8)) - lim - 4);
          float v = static_cast<float>((k + ((i & 1) ? 0.5 : 0.0)) * step);
          if (i % 3 == 1) v = std::nextafter(v, INFINITY);
          if (i % 3 == 2) v = std::nextafter(v, -INFINITY);
          if (i % 37 == 5) v = 0.0f;
          if (i % 41 == 6) v = -0.0f;
          if (i % 43 == 7) v = detail::bits_float(1u + static_cast<uint32_t>(rng() % 0x7fffffu));
          if (i % 47 == 8) v = 3e38f;
          if (i % 53 == 9) v = -1e30f;
          if (!std::isfinite(v)) v = 1.0f;
          x[static_cast<size_t>(i)] = v;
        }
        const float c = detail::grid_inverse_step_f(step, bits);
        for (bool stream : {false, true}) {
          for (int64_t offset = 0; offset < 8; ++offset) {
            for (int64_t len : {n, n - 1, int64_t{63}, int64_t{1}}) {
              std::vector<uint8_t> got(static_cast<size_t>(n * 2 + 80), 0xcd), want(got);
              uint8_t* const base = got.data() + 64 - reinterpret_cast<uintptr_t>(got.data()) % 64 + offset;
              const size_t at = static_cast<size_t>(base - got.data());
              for (int64_t i = 0; i < len; ++i) {
                const int64_t level = detail::grid_level(x[static_cast<size_t>(i)], step, bits);
                for (uint32_t b = 0; b < bits / 8; ++b)
                  want[at + static_cast<size_t>(i * bits / 8 + b)] = static_cast<uint8_t>(level >> (8 * b));
              }
              kernels::grid_encode_fields(x.data(), len, step, c, bits, stream, base);
              kernels::stream_fence();
              ASSERT_TRUE(test::bytes_equal(got, want))
                  << name << " bits=" << bits << " step=" << step << " stream=" << stream << " offset=" << offset
                  << " len=" << len;
            }
          }
        }
      }
    }
  }
}

TEST_F(KernelTargets, StreamedGridEncodeGivesTheSameBytes) {
  // Payloads above stream_min_bytes() are written with streaming stores: with the threshold at 0
  // every grid encode of whole-byte fields takes that path, also into a payload at an odd address.
  const Layout layout(std::vector<int64_t>{70001, 3, 131072 + 5, 64, 100000});
  const int64_t n = layout.num_elems();
  const std::vector<float> x = make_input(n, 9);
  for (const char* spec : {"grid:step=0.00390625,bits=16", "grid:step=0.001,bits=8"}) {
    const auto codec = make_codec(spec, layout);
    detail::set_stream_min_bytes(-1);
    const std::vector<uint8_t> want = test::encode(*codec, x, RngKey{});
    detail::set_stream_min_bytes(0);
    for (int threads : {1, 3}) {
      set_cpu_threads(threads);
      for (size_t offset : {0, 1, 2}) {
        std::vector<uint8_t> buf(want.size() + 3, 0x5a);
        codec->encode(x, RngKey{}, std::span<uint8_t>(buf.data() + offset, want.size()));
        EXPECT_TRUE(
            test::bytes_equal(std::vector<uint8_t>(buf.begin() + static_cast<std::ptrdiff_t>(offset),
                                                   buf.begin() + static_cast<std::ptrdiff_t>(offset + want.size())),
                              want))
            << spec << " threads=" << threads << " offset=" << offset;
        for (size_t i = 0; i < offset; ++i) EXPECT_EQ(buf[i], 0x5a) << spec;
        for (size_t i = offset + want.size(); i < buf.size(); ++i) EXPECT_EQ(buf[i], 0x5a) << spec;
      }
    }
  }
  detail::set_stream_min_bytes(-1);
}

TEST_F(KernelTargets, DensePlaneDecodeGivesTheElementValueForEveryScale) {
  // The decode's level table (scale * level / s in one float product where that rounds like the
  // element math, else dither_value per level) against dither_value / natdither_value of every
  // element, on every target: payloads of random valid levels and signs under scales of every
  // magnitude (subnormal, tiny, huge, random bit patterns), power-of-two and other level counts.
  std::mt19937_64 rng(31);
  const int64_t n = 5000;
  const Layout layout(n);
  for (const char* spec :
       {"dither:levels=1,norm=l2,block=100", "dither:levels=4,norm=l2,block=100", "dither:levels=8,norm=linf,block=64",
        "dither:levels=128,norm=l2,block=300", "dither:levels=3,norm=l2,block=100",
        "dither:levels=255,norm=l2,block=100", "natdither:levels=3,norm=l2,block=100",
        "natdither:levels=127,norm=linf,block=100", "natdither:levels=200,norm=l2,block=100", "terngrad"}) {
    const auto codec = make_codec(spec, layout);
    const DitherOptions q = detail::dither_quantizer(codec->spec());
    const bool natural = codec->spec().id() == CodecId::kNatDither;
    const int nbits = static_cast<int>(detail::ceil_log2_u64(uint64_t{q.levels} + 1));
    const int words = detail::group_words(nbits);
    const int64_t blocks = codec->num_scales();
    const int64_t block_len = q.block > 0 ? q.block : n;  // one segment: blocks of q.block, the last shorter
    std::vector<uint8_t> payload(codec->encoded_bytes(), 0);
    std::vector<float> scales(static_cast<size_t>(blocks));
    for (int64_t b = 0; b < blocks; ++b) {
      float v = std::fabs(detail::bits_float(static_cast<uint32_t>(rng())));
      if (b % 5 == 1) v = detail::bits_float(1u + static_cast<uint32_t>(rng() % 0x7fffffu));  // subnormal
      if (b % 5 == 2) v = std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f, -120);
      if (b % 5 == 3) v = FLT_MAX;
      if (!std::isfinite(v)) v = 1.5f;
      scales[static_cast<size_t>(b)] = v;
      std::memcpy(payload.data() + 4 * b, &v, 4);
    }
    std::vector<float> want(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t level = static_cast<uint32_t>(rng() % (q.levels + 1));
      const bool negative = level != 0 && (rng() & 1u);
      uint8_t* g = payload.data() + 4 * blocks + 4 * words * (i / 32);
      const auto set_bit = [&](int word, int bit) { g[4 * word + bit / 8] |= static_cast<uint8_t>(1u << (bit % 8)); };
      if (negative) set_bit(0, static_cast<int>(i % 32));
      for (int k = 0; k < nbits; ++k)
        if ((level >> k) & 1u) set_bit(1 + k, static_cast<int>(i % 32));
      const float scale = scales[static_cast<size_t>(i / block_len)];
      want[static_cast<size_t>(i)] = natural ? detail::natdither_value(level, negative, scale, q.levels)
                                             : detail::dither_value(level, negative, scale, q.levels);
    }
    for (const auto& [id, name] : kernels::available_targets()) {
      kernels::force_target(id);
      ASSERT_TRUE(test::bitwise_equal(test::decode(*codec, payload, RngKey{}), want)) << spec << " " << name;
    }
  }
}

TEST_F(KernelTargets, PlaneGroupValidationFindsTheFirstBadGroupLikeTheElementRules) {
  // plane_groups_first_bad against the rule of one group (plane_group_bad_lanes) on every target:
  // valid groups with one planted problem (a sign bit on a zero level, or a level above s) at each
  // group of a run and each lane, at aligned and unaligned payload offsets.
  std::mt19937_64 rng(11);
  for (const auto& [id, name] : kernels::available_targets()) {
    kernels::force_target(id);
    for (int nbits = 1; nbits <= 4; ++nbits) {
      for (uint32_t s : {(1u << nbits) - 1u, (1u << (nbits - 1)) + 1u, 1u << (nbits - 1)}) {
        if (s > (1u << nbits) - 1u) continue;  // s needs nbits bits: 2^(nbits-1) <= s < 2^nbits
        const bool level_check = (uint64_t{1} << nbits) != uint64_t{s} + 1;
        const int words = 1 + nbits;
        const int64_t groups = 70;
        // Valid groups: levels in 0..s, sign bits only on nonzero levels.
        std::vector<uint32_t> valid(static_cast<size_t>(groups * words), 0u);
        for (int64_t g = 0; g < groups; ++g)
          for (int lane = 0; lane < 32; ++lane) {
            const uint32_t level = static_cast<uint32_t>(rng() % (s + 1));
            for (int k = 0; k < nbits; ++k)
              valid[static_cast<size_t>(g * words + 1 + k)] |= ((level >> k) & 1u) << lane;
            if (level != 0u && (rng() & 1u)) valid[static_cast<size_t>(g * words)] |= 1u << lane;
          }
        for (int offset : {0, 1}) {
          std::vector<uint8_t> bytes(4 * valid.size() + 4);
          std::memcpy(bytes.data() + offset, valid.data(), 4 * valid.size());
          ASSERT_EQ(kernels::plane_groups_first_bad(bytes.data() + offset, nbits, s, level_check, 0, groups), -1)
              << name << " nbits=" << nbits << " s=" << s;
          for (int64_t at = 0; at < groups; at += 3) {
            std::vector<uint32_t> w = valid;
            const int lane = static_cast<int>((at * 7) % 32);
            uint32_t* gw = w.data() + at * words;
            const bool above = level_check && (at % 2 == 1);
            for (int k = 0; k < nbits; ++k) gw[1 + k] &= ~(1u << lane);
            if (above) {  // level s + 1 (fits nbits when level_check)
              for (int k = 0; k < nbits; ++k) gw[1 + k] |= (((s + 1) >> k) & 1u) << lane;
            } else {  // a sign bit on a zero level
              gw[0] |= 1u << lane;
            }
            std::memcpy(bytes.data() + offset, w.data(), 4 * w.size());
            for (int64_t g0 : {int64_t{0}, at}) {
              ASSERT_EQ(kernels::plane_groups_first_bad(bytes.data() + offset, nbits, s, level_check, g0, groups), at)
                  << name << " nbits=" << nbits << " s=" << s << " at=" << at << " offset=" << offset;
            }
            if (at > 0) {
              ASSERT_EQ(kernels::plane_groups_first_bad(bytes.data() + offset, nbits, s, level_check, 0, at), -1);
            }
          }
        }
      }
    }
  }
}

TEST_F(KernelTargets, PhiloxWordsMatchTheBlockFunctionAcrossTheLowCounterWrap) {
  const RngKey key{0xfeedfacecafebeefull, 7, 3, detail::kStreamDownlink};
  std::vector<uint32_t> want(4 * 100), got(4 * 100);
  for (uint64_t first : {uint64_t{0}, uint64_t{13}, uint64_t{0xffffffffu} - 40, (uint64_t{5} << 32) - 7}) {
    kernels::ref::philox_words(key, detail::kStreamElement, first, 100, want.data());
    for (int64_t k = 0; k < 100; ++k)
      for (int j = 0; j < 4; ++j)
        ASSERT_EQ(want[4 * k + j], detail::philox_block(key, detail::kStreamElement, first + k).v[j]);
    for (const auto& [id, name] : kernels::available_targets()) {
      kernels::force_target(id);
      kernels::philox_words(key, detail::kStreamElement, first, 100, got.data());
      EXPECT_EQ(want, got) << name << " first=" << first;
    }
  }
}

TEST_F(KernelTargets, OnePassDenseEncodeEqualsTheTwoPassFormAndLeavesThePayloadOnError) {
  // Layouts above the parallel threshold whose blocks each lie in one pool piece: the dense codecs
  // then reduce a piece's blocks and quantize it while it is in cache (x read once), staging the
  // payload. The bytes must be those of encode_with_scales with compute_scales' scales (the
  // two-pass form), on every target and thread count, and a NaN, an Inf or a norm beyond fp32
  // must leave the payload as it was.
  const std::vector<int64_t> one = {262144 + 1000};
  const std::vector<int64_t> five = {65536, 65536, 65536, 65536, 1000};
  const std::pair<const char*, std::vector<int64_t>> cases[] = {{"dither:levels=4,norm=l2,block=512", one},
                                                                {"dither:levels=1,norm=linf,block=4096", one},
                                                                {"dither:levels=3,norm=l1,block=100", five},
                                                                {"dither:levels=300,norm=l2,block=1000", five},
                                                                {"terngrad", five},
                                                                {"natdither:levels=3,norm=l2,block=333", five},
                                                                {"natdither:levels=80,norm=l2,block=5000", five}};
  const RngKey key{0x1234567890abcdefull, 3, 17, 0};
  for (const auto& [spec, segs] : cases) {
    const Layout layout(segs);
    const auto codec = make_codec(spec, layout);
    std::vector<float> x = make_input(layout.num_elems(), 7);
    std::vector<float> scales(static_cast<size_t>(codec->num_scales()));
    codec->compute_scales(x, scales);
    std::vector<uint8_t> want(codec->encoded_bytes());
    codec->encode_with_scales(x, scales, key, want);
    for (const auto& [id, name] : kernels::available_targets()) {
      kernels::force_target(id);
      for (int threads : {1, 2}) {
        set_cpu_threads(threads);
        EXPECT_TRUE(test::bytes_equal(test::encode(*codec, x, key), want))
            << spec << " " << name << " threads=" << threads;
      }
    }
    kernels::force_target(0);
    set_cpu_threads(2);
    const int64_t at = layout.num_elems() / 2 + 77;
    const bool sums = std::string(spec).find("linf") == std::string::npos && std::string(spec) != "terngrad";
    for (int poison = 0; poison < 3; ++poison) {
      if (poison == 2 && !sums) continue;  // a largest magnitude cannot overflow
      std::vector<float> bad_x = x;
      if (poison == 0) bad_x[static_cast<size_t>(at)] = std::numeric_limits<float>::quiet_NaN();
      if (poison == 1) bad_x[static_cast<size_t>(at)] = -std::numeric_limits<float>::infinity();
      if (poison == 2)
        for (int64_t i = at; i < at + 8; ++i) bad_x[static_cast<size_t>(i)] = 3e38f;
      std::vector<uint8_t> out(codec->encoded_bytes(), 0xA5);
      try {
        codec->encode(bad_x, key, out);
        ADD_FAILURE() << spec << " accepted poison " << poison;
      } catch (const Error& e) {
        EXPECT_EQ(e.status(), poison == 2 ? gcompErrorInvalidArgument : gcompErrorNonFinite) << spec << e.what();
      }
      EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](uint8_t v) { return v == 0xA5; }))
          << spec << " payload written on error " << poison;
    }
  }
}

TEST_F(KernelTargets, NaturalEncodeAboveTheParallelThresholdEqualsTheElementMath) {
  // Above the parallel threshold natural encodes and checks each sub-range while it is in cache,
  // into staging: the payload must be the element math's (sign words, then a code byte per
  // element and zero padding), on every target and 1-2 threads, and untouched by a NaN or Inf.
  const Layout layout(std::vector<int64_t>{262144 + 1000 + 5});
  const int64_t n = layout.num_elems();
  const auto codec = make_codec("natural", layout);
  const std::vector<float> x = make_input(n, 11);
  const RngKey key{0x1234567890abcdefull, 3, 17, 0};
  const int64_t words = (n + 31) / 32;
  std::vector<uint8_t> want(codec->encoded_bytes(), 0);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t word = detail::philox_block(key, detail::kStreamElement, static_cast<uint64_t>(i) / 4).v[i % 4];
    const uint32_t code = detail::natural_exponent_code(x[static_cast<size_t>(i)], word);
    want[static_cast<size_t>(4 * words + i)] = static_cast<uint8_t>(code);
    if (code != 0 && x[static_cast<size_t>(i)] < 0.0f)
      want[static_cast<size_t>(4 * (i / 32) + (i % 32) / 8)] |= static_cast<uint8_t>(1u << (i % 8));
  }
  for (const auto& [id, name] : kernels::available_targets()) {
    kernels::force_target(id);
    for (int threads : {1, 2}) {
      set_cpu_threads(threads);
      EXPECT_TRUE(test::bytes_equal(test::encode(*codec, x, key), want)) << name << " threads=" << threads;
    }
  }
  for (int64_t at : {int64_t{0}, n / 2 + 3, n - 1}) {
    for (float poison : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      std::vector<float> bad_x = x;
      bad_x[static_cast<size_t>(at)] = poison;
      std::vector<uint8_t> out(codec->encoded_bytes(), 0xA5);
      try {
        codec->encode(bad_x, key, out);
        ADD_FAILURE() << "accepted a non-finite at " << at;
      } catch (const Error& e) {
        EXPECT_EQ(e.status(), gcompErrorNonFinite) << e.what();
        EXPECT_NE(std::string(e.what()).find("element " + std::to_string(at)), std::string::npos) << e.what();
      }
      EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](uint8_t v) { return v == 0xA5; })) << "payload written " << at;
    }
  }
}

TEST(SelectFirstK, EqualsAFullSortForEveryThresholdAndTieStructure) {
  // Keys with many ties (a few distinct values), spread values, all equal, and keys in a narrow
  // range far from 0 (as top-k's keys of the largest |x|); thresholds that are right, far too low
  // (retries upward), far too high (retries downward) and hopeless (the radix select); parallel
  // sizes.
  std::mt19937_64 rng(21);
  for (int64_t n : {int64_t{1000}, (int64_t{1} << 18) + 333}) {
    for (int pattern = 0; pattern < 4; ++pattern) {
      std::vector<uint32_t> key(static_cast<size_t>(n));
      for (auto& v : key)
        v = pattern == 0   ? static_cast<uint32_t>(rng() % 7) * 0x10000000u
            : pattern == 1 ? static_cast<uint32_t>(rng())
            : pattern == 2 ? 42u
                           : 0x3f000000u + static_cast<uint32_t>(rng() % 50000);
      const detail::OrderKeys keys = [&](int64_t a, int64_t e, uint32_t* out) {
        std::copy(key.begin() + a, key.begin() + e, out);
      };
      for (int64_t k : {int64_t{1}, n / 100, n / 3, n - 1}) {
        std::vector<int64_t> order(static_cast<size_t>(n));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return key[a] < key[b]; });
        std::vector<int64_t> want(order.begin(), order.begin() + k);
        std::sort(want.begin(), want.end());
        for (uint32_t t :
             {detail::sampled_threshold(n, k, keys), 0u, 0xffffffffu, key[static_cast<size_t>(order[k - 1])]}) {
          const detail::IndexList got = detail::select_first_k(n, k, keys, t);
          EXPECT_EQ(std::vector<int64_t>(got.begin(), got.end()), want)
              << "n=" << n << " pattern=" << pattern << " k=" << k << " t=" << t;
        }
      }
    }
  }
}

TEST(SelectFirstK, SampledThresholdIsTheKeyOfItsRankAmongTheSamples) {
  // select.hpp: the sample's key at rank r + 4 sqrt(r) + 8 (r = k/n of the samples) among
  // min(n/16, 65536) evenly spaced elements; taken by a radix selection, checked here against a
  // sort of the same samples, for keys with ties, spread keys, narrow high keys and equal keys.
  std::mt19937_64 rng(5);
  for (int64_t n : {int64_t{5000}, int64_t{1} << 20}) {
    for (int pattern = 0; pattern < 4; ++pattern) {
      std::vector<uint32_t> key(static_cast<size_t>(n));
      for (auto& v : key)
        v = pattern == 0   ? static_cast<uint32_t>(rng() % 5) * 0x01001001u
            : pattern == 1 ? static_cast<uint32_t>(rng())
            : pattern == 2 ? 0xfffff000u + static_cast<uint32_t>(rng() % 3000)
                           : 7u;
      const detail::OrderKeys keys = [&](int64_t a, int64_t e, uint32_t* out) {
        std::copy(key.begin() + a, key.begin() + e, out);
      };
      const int64_t samples = std::min<int64_t>((n + 15) / 16, 65536);
      std::vector<uint32_t> sample(static_cast<size_t>(samples));
      for (int64_t j = 0; j < samples; ++j)
        sample[j] =
            key[static_cast<size_t>(static_cast<double>(j) * static_cast<double>(n) / static_cast<double>(samples))];
      std::sort(sample.begin(), sample.end());
      for (int64_t k : {int64_t{1}, n / 1000, n / 100, n / 2, n}) {
        const double r = std::floor(static_cast<double>(k) * static_cast<double>(samples) / static_cast<double>(n));
        const int64_t rank = std::min<int64_t>(samples - 1, static_cast<int64_t>(r + 4.0 * std::sqrt(r) + 8.0));
        EXPECT_EQ(detail::sampled_threshold(n, k, keys), sample[static_cast<size_t>(rank)])
            << "n=" << n << " pattern=" << pattern << " k=" << k;
      }
    }
  }
}

TEST(ThreadPool, RunsEveryTaskOnceAndRethrowsTheLowestFailure) {
  set_cpu_threads(3);
  std::vector<int> hits(1000, 0);
  detail::parallel_for(1000, [&](int64_t t) { hits[static_cast<size_t>(t)] += 1; });
  EXPECT_TRUE(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
  try {
    detail::parallel_for(100, [&](int64_t t) {
      if (t == 40 || t == 70) throw Error(gcompErrorInvalidArgument, "task " + std::to_string(t));
    });
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "task 40");
  }
  EXPECT_THROW(set_cpu_threads(-1), Error);
  EXPECT_THROW(set_cpu_threads(100000), Error);
  set_cpu_threads(0);
  EXPECT_GE(cpu_threads(), 1);
}
