// SPDX-License-Identifier: Apache-2.0
// The codec registry (registry.hpp): the spec keys, then one descriptor per codec.
#include "host/codecs/registry.hpp"

#include "host/codecs/dense_planes.hpp"
#include "host/codecs/grid.hpp"
#include "host/codecs/sdither.hpp"
#include "host/codecs/simple_codecs.hpp"
#include "host/codecs/spherical.hpp"

#include <gcomp/detail/sparse.hpp>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <variant>

// The device entry of each GPU codec (DeviceCodecEntry, cuda/dispatch/plan.cuh) is defined in
// its CUDA launcher file; a build without CUDA has none (GCOMP_DEVICE_ENTRY gives null).
#if GCOMP_HAVE_CUDA
namespace gcomp::cuda::detail {
extern const DeviceCodecEntry kIdentityDevice, kDitherDevice, kTernGradDevice, kSignDevice, kTopKDevice, kRandKDevice,
    kNaturalDevice, kNatDitherDevice, kSDitherDevice, kSphericalDevice, kGridDevice;
}  // namespace gcomp::cuda::detail
#define GCOMP_DEVICE_ENTRY(name) (&::gcomp::cuda::detail::name)
#else
#define GCOMP_DEVICE_ENTRY(name) nullptr
#endif

namespace gcomp::detail {

void bad_spec(const std::string& text, const std::string& why) {
  // The text may come from a file or a command line: quoted escaped.
  GCOMP_FAIL(gcompErrorInvalidArgument, "codec spec '" + printable(text) + "': " + printable(why, SIZE_MAX));
}

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- value parsing and text ---------------------------------------------------------------------

int64_t parse_int(const std::string& text, const char* key, const std::string& v, int64_t lo, int64_t hi) {
  int64_t out = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || ptr != v.data() + v.size())
    bad_spec(text, std::string(key) + "=" + v + " is not an integer");
  if (out < lo || out > hi)
    bad_spec(text,
             std::string(key) + "=" + v + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return out;
}

double parse_double(const std::string& text, const char* key, const std::string& v) {
  double out = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || ptr != v.data() + v.size() || !std::isfinite(out))
    bad_spec(text, std::string(key) + "=" + v + " is not a finite number");
  return out;
}

bool parse_bool(const std::string& text, const char* key, const std::string& v) {
  if (v == "1" || v == "true") return true;
  if (v == "0" || v == "false") return false;
  bad_spec(text, std::string(key) + "=" + v + " must be 0 or 1");
}

std::string fmt_double(double v) {
  char buf[64];
  // Shortest text that reads back to the same double.
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  return std::string(buf, ptr);
}

const char* norm_name(Norm n) {
  switch (n) {
    case Norm::kL1: return "l1";
    case Norm::kL2: return "l2";
    case Norm::kLinf: return "linf";
    case Norm::kLp: return "lp";
  }
  return "?";
}

// ---- keys (each parses into exactly one options field) -----------------------------------------

/// Calls @p set on the options alternative that has the key's field (a generic lambda whose return
/// type names the field, so that it is invocable on exactly those alternatives).
template <class Set>
void set_field(CodecOptions& o, Set set) {
  std::visit(
      [&](auto& x) {
        if constexpr (std::is_invocable_v<Set&, decltype(x)>)
          set(x);
        else
          GCOMP_FAIL(gcompErrorInternal, "codec registry: a key applied to options without its field");
      },
      o);
}

/// The text of the key's field in the options alternative held, as @p text writes it.
template <class Text>
std::string field_text(const CodecOptions& o, Text text) {
  return std::visit(
      [&](const auto& x) -> std::string {
        if constexpr (std::is_invocable_v<Text&, decltype(x)>)
          return text(x);
        else
          GCOMP_FAIL(gcompErrorInternal, "codec registry: a key read from options without its field");
      },
      o);
}

const CodecKey kLevels{"levels",
                       [](CodecOptions& o, const std::string& t, const std::string& v) {
                         const auto levels = static_cast<uint32_t>(parse_int(t, "levels", v, 1, 1 << 20));
                         set_field(o, [&](auto& x) -> decltype(void(x.levels)) { x.levels = levels; });
                       },
                       [](const CodecOptions& o) {
                         return field_text(o, [](const auto& x) -> decltype(std::to_string(x.levels)) {
                           return std::to_string(x.levels);
                         });
                       }};
const CodecKey kNorm{
    "norm",
    [](CodecOptions& o, const std::string& t, const std::string& v) {
      Norm norm = Norm::kL2;
      if (v == "l1")
        norm = Norm::kL1;
      else if (v == "l2")
        norm = Norm::kL2;
      else if (v == "linf" || v == "inf")
        norm = Norm::kLinf;
      else if (v == "lp")
        norm = Norm::kLp;
      else
        bad_spec(t, "norm=" + v + " is not one of l1, l2, linf, lp");
      set_field(o, [&](auto& x) -> decltype(void(x.norm)) { x.norm = norm; });
    },
    [](const CodecOptions& o) {
      return field_text(o, [](const auto& x) -> decltype(std::string(norm_name(x.norm))) { return norm_name(x.norm); });
    }};
const CodecKey kP{
    "p",
    [](CodecOptions& o, const std::string& t, const std::string& v) {
      const double p = parse_double(t, "p", v);
      set_field(o, [&](DitherOptions& x) { x.p = p; });
    },
    [](const CodecOptions& o) { return field_text(o, [](const DitherOptions& x) { return fmt_double(x.p); }); }};
/// Quantization block of dither, natdither, sdither and sign: 0 = one block per segment.
const CodecKey kBlock{
    "block",
    [](CodecOptions& o, const std::string& t, const std::string& v) {
      const int64_t block = parse_int(t, "block", v, 0, INT64_MAX);
      set_field(o, [&](auto& x) -> decltype(void(x.block)) { x.block = block; });
    },
    [](const CodecOptions& o) {
      return field_text(o, [](const auto& x) -> decltype(std::to_string(x.block)) { return std::to_string(x.block); });
    }};
/// Spherical block m_b >= 1 (another quantity than kBlock: the dimension of one codebook).
const CodecKey kSphereBlock{"block",
                            [](CodecOptions& o, const std::string& t, const std::string& v) {
                              const int64_t dim = parse_int(t, "block", v, 1, INT64_MAX);
                              set_field(o, [&](SphericalOptions& x) { x.dim = dim; });
                            },
                            [](const CodecOptions& o) {
                              return field_text(o, [](const SphericalOptions& x) { return std::to_string(x.dim); });
                            }};
const CodecKey kClip{
    "clip",
    [](CodecOptions& o, const std::string& t, const std::string& v) {
      const double clip = parse_double(t, "clip", v);
      if (clip < 0) bad_spec(t, "clip must be >= 0 (0 turns clipping off)");
      set_field(o, [&](TernGradOptions& x) { x.clip = clip; });
    },
    [](const CodecOptions& o) { return field_text(o, [](const TernGradOptions& x) { return fmt_double(x.clip); }); }};
const CodecKey kScale{"scale",
                      [](CodecOptions& o, const std::string& t, const std::string& v) {
                        bool scaled = true;
                        if (v == "l1" || v == "mean")
                          scaled = true;
                        else if (v == "none")
                          scaled = false;
                        else
                          bad_spec(t, "scale=" + v + " is not one of l1, none");
                        set_field(o, [&](SignOptions& x) { x.scaled = scaled; });
                      },
                      [](const CodecOptions& o) {
                        return field_text(o,
                                          [](const SignOptions& x) { return std::string(x.scaled ? "l1" : "none"); });
                      }};
const CodecKey kK{"k",
                  [](CodecOptions& o, const std::string& t, const std::string& v) {
                    const int64_t k = parse_int(t, "k", v, 1, INT64_MAX);
                    set_field(o, [&](auto& x) -> decltype(void(x.k)) { x.k = k; });
                  },
                  [](const CodecOptions& o) {
                    return field_text(
                        o, [](const auto& x) -> decltype(std::to_string(x.k)) { return std::to_string(x.k); });
                  }};
const CodecKey kRatio{"ratio",
                      [](CodecOptions& o, const std::string& t, const std::string& v) {
                        const double ratio = parse_double(t, "ratio", v);
                        if (!(ratio > 0.0 && ratio <= 1.0)) bad_spec(t, "ratio must be in (0, 1]");
                        set_field(o, [&](auto& x) -> decltype(void(x.ratio)) { x.ratio = ratio; });
                      },
                      [](const CodecOptions& o) {
                        return field_text(
                            o, [](const auto& x) -> decltype(fmt_double(x.ratio)) { return fmt_double(x.ratio); });
                      }};
const CodecKey kIndex{"index",
                      [](CodecOptions& o, const std::string& t, const std::string& v) {
                        IndexCode index = IndexCode::kPlain;
                        if (v == "plain")
                          index = IndexCode::kPlain;
                        else if (v == "rice")
                          index = IndexCode::kRice;
                        else
                          bad_spec(t, "index=" + v + " is not one of plain, rice");
                        set_field(o, [&](TopKOptions& x) { x.index = index; });
                      },
                      [](const CodecOptions& o) {
                        return field_text(o, [](const TopKOptions& x) {
                          return std::string(x.index == IndexCode::kRice ? "rice" : "plain");
                        });
                      }};
const CodecKey kUnbiased{"unbiased",
                         [](CodecOptions& o, const std::string& t, const std::string& v) {
                           const bool unbiased = parse_bool(t, "unbiased", v);
                           set_field(o, [&](RandKOptions& x) { x.unbiased = unbiased; });
                         },
                         [](const CodecOptions& o) {
                           return field_text(o,
                                             [](const RandKOptions& x) { return std::string(x.unbiased ? "1" : "0"); });
                         }};
const CodecKey kCode{"code",
                     [](CodecOptions& o, const std::string& t, const std::string& v) {
                       EliasCode code = EliasCode::kGamma;
                       if (v == "gamma")
                         code = EliasCode::kGamma;
                       else if (v == "delta")
                         code = EliasCode::kDelta;
                       else
                         bad_spec(t, "code=" + v + " is not one of gamma, delta");
                       set_field(o, [&](SDitherOptions& x) { x.code = code; });
                     },
                     [](const CodecOptions& o) {
                       return field_text(o, [](const SDitherOptions& x) {
                         return std::string(x.code == EliasCode::kDelta ? "delta" : "gamma");
                       });
                     }};
const CodecKey kChunk{"chunk",
                      [](CodecOptions& o, const std::string& t, const std::string& v) {
                        const int64_t chunk = parse_int(t, "chunk", v, 1, int64_t{1} << 24);
                        set_field(o, [&](SDitherOptions& x) { x.chunk = chunk; });
                      },
                      [](const CodecOptions& o) {
                        return field_text(o, [](const SDitherOptions& x) { return std::to_string(x.chunk); });
                      }};
/// Spherical codebook index bits B in 1..16.
const CodecKey kSphereBits{"bits",
                           [](CodecOptions& o, const std::string& t, const std::string& v) {
                             const auto bits = static_cast<uint32_t>(parse_int(t, "bits", v, 1, 16));
                             set_field(o, [&](SphericalOptions& x) { x.index_bits = bits; });
                           },
                           [](const CodecOptions& o) {
                             return field_text(o,
                                               [](const SphericalOptions& x) { return std::to_string(x.index_bits); });
                           }};
/// Grid level width in bits, 2..32.
const CodecKey kGridBits{"bits",
                         [](CodecOptions& o, const std::string& t, const std::string& v) {
                           const auto bits = static_cast<uint32_t>(parse_int(t, "bits", v, 2, 32));
                           set_field(o, [&](GridOptions& x) { x.level_bits = bits; });
                         },
                         [](const CodecOptions& o) {
                           return field_text(o, [](const GridOptions& x) { return std::to_string(x.level_bits); });
                         }};
/// Grid quantum Delta > 0.
const CodecKey kStep{
    "step",
    [](CodecOptions& o, const std::string& t, const std::string& v) {
      const double quantum = parse_double(t, "step", v);
      if (!(quantum > 0.0)) bad_spec(t, "step must be > 0");
      set_field(o, [&](GridOptions& x) { x.quantum = quantum; });
    },
    [](const CodecOptions& o) { return field_text(o, [](const GridOptions& x) { return fmt_double(x.quantum); }); }};
const CodecKey kUnscaled{"unscaled",
                         [](CodecOptions& o, const std::string& t, const std::string& v) {
                           const bool unscaled = parse_bool(t, "unscaled", v);
                           set_field(o, [&](SphericalOptions& x) { x.unscaled = unscaled; });
                         },
                         [](const CodecOptions& o) {
                           return field_text(
                               o, [](const SphericalOptions& x) { return std::string(x.unscaled ? "1" : "0"); });
                         }};

// ---- canonical text pieces ----------------------------------------------------------------------

std::string kv(const CodecKey& key, const CodecSpec& s) {
  return std::string(key.name) + "=" + key.value_text(s.options());
}

std::string dither_canonical(const CodecSpec& s) {
  std::string out = kv(kLevels, s) + "," + kv(kNorm, s);
  if (s.options<DitherOptions>().norm == Norm::kLp) out += "," + kv(kP, s);
  return out + "," + kv(kBlock, s);
}

/// k when given, else ratio.
std::string sparse_size_canonical(const CodecSpec& s) {
  const bool has_k = std::visit(
      [](const auto& x) -> bool {
        if constexpr (requires { x.k; })
          return x.k > 0;
        else
          return false;
      },
      s.options());
  return has_k ? kv(kK, s) : kv(kRatio, s);
}

// ---- closed-form errors of the bits report (spec/ALGORITHMS.md §5.2(c), §9.2 T17) ---------------

double sq_norm(std::span<const float> x) {
  double s = 0.0;
  for (float v : x) s += static_cast<double>(v) * static_cast<double>(v);
  return s;
}

/// E|C(x) - x|^2 of the dither-family quantizers (§2.2: sum (nu/s)^2 tau (1 - tau); natural
/// dithering §5.3: nu^2 (hi - r)(r - lo)), with the scales the codec itself computes.
double dither_family_error(const Codec& c, std::span<const float> x) {
  const CodecSpec& s = c.spec();
  const DitherOptions q = dither_quantizer(s);
  std::vector<float> scales(static_cast<size_t>(c.num_scales()));
  c.compute_scales(x, scales);
  const auto blocks = block_offsets(c.layout(), q.block);
  const double levels = static_cast<double>(q.levels);
  double v = 0.0;
  for (size_t b = 0; b + 1 < blocks.size(); ++b) {
    const double nu = scales[b];
    if (nu == 0.0) continue;
    for (int64_t i = blocks[b]; i < blocks[b + 1]; ++i) {
      const double a = std::fabs(static_cast<double>(x[static_cast<size_t>(i)]));
      if (s.id() == CodecId::kNatDither) {
        const double r = a / nu;
        if (r >= 1.0) continue;
        const double first = std::ldexp(1.0, 1 - static_cast<int>(q.levels));
        double lo = 0.0, hi = first;
        if (r >= first) {
          lo = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(r))));
          hi = 2.0 * lo;
        }
        v += nu * nu * (hi - r) * (r - lo);
      } else {
        const double r = std::min(levels, levels * a / nu);
        const double tau = r - std::floor(r);
        v += (nu / levels) * (nu / levels) * tau * (1.0 - tau);
      }
    }
  }
  return v;
}

bool always(const CodecSpec&) { return true; }

template <class C>
std::unique_ptr<Codec> make(const CodecSpec& spec, const Layout& layout) {
  return std::make_unique<C>(spec, layout);
}

// ---- the registry -------------------------------------------------------------------------------

std::vector<CodecDescriptor> build_registry() {
  std::vector<CodecDescriptor> r;
  r.push_back({.id = CodecId::kIdentity,
               .name = "identity",
               .keys = {},
               .defaults = NoOptions{},
               .check = nullptr,
               .canonical = [](const CodecSpec&) { return std::string(); },
               .make_cpu = make<IdentityCodec>,
               .device = GCOMP_DEVICE_ENTRY(kIdentityDevice),
               .shareable_scales = false,
               .block_scales = nullptr,
               .bias = Bias::kExact,
               .exact_error = [](const Codec&, std::span<const float>) { return 0.0; },
               .guarantee = "exact: omega = 0",
               .bits = "32 n",
               .examples = {"identity"}});
  r.push_back(
      {.id = CodecId::kDither,
       .name = "dither",
       .keys = {{&kLevels}, {&kNorm, "l2|linf|l1|lp"}, {&kP}, {&kBlock}},
       .defaults = DitherOptions{},
       .check = nullptr,
       .canonical = dither_canonical,
       .make_cpu = make<DensePlaneCodec>,
       .device = GCOMP_DEVICE_ENTRY(kDitherDevice),
       .shareable_scales = true,
       .block_scales = always,
       .bias = Bias::kUnbiased,
       .exact_error = dither_family_error,
       .guarantee = "unbiased; s=1: omega = 1/alpha_p(b)-1 (l2: sqrt(b)-1, linf: (sqrt(b)-1)/2); "
                    "l2: min(b/(4s^2), sqrt(b)/s), linf: min(b/(4s^2), (1+sqrt(b))/(2s))",
       .bits = "32 ceil(n/b) + n (1 + ceil(log2(s+1)))",
       .examples = {"dither:levels=1,norm=l2", "dither:levels=2,norm=l2", "dither:levels=4,norm=l2",
                    "dither:levels=16,norm=l2", "dither:levels=1,norm=linf,block=64", "dither:levels=4,norm=linf"}});
  r.push_back({.id = CodecId::kTernGrad,
               .name = "terngrad",
               .keys = {{&kClip}},
               .defaults = TernGradOptions{},
               .check = nullptr,
               .canonical = [](const CodecSpec& s) { return kv(kClip, s); },
               .make_cpu = make<DensePlaneCodec>,
               .device = GCOMP_DEVICE_ENTRY(kTernGradDevice),
               .shareable_scales = true,
               .block_scales = always,
               .bias = Bias::kByOption,
               .exact_error =
                   [](const Codec& c, std::span<const float> x) {
                     return c.spec().options<TernGradOptions>().clip > 0.0 ? kNaN : dither_family_error(c, x);
                   },
               .guarantee = "unbiased without clip: omega = (sqrt(b)-1)/2, b = largest segment; biased with clip "
                            "(clip=c clips at c*sigma; 0 = off)",
               .bits = "2 n + 32 #segments",
               .examples = {"terngrad"}});
  r.push_back({.id = CodecId::kSign,
               .name = "sign",
               .keys = {{&kBlock}, {&kScale, "l1|none"}},
               .defaults = SignOptions{},
               .check = nullptr,
               .canonical = [](const CodecSpec& s) { return kv(kBlock, s) + "," + kv(kScale, s); },
               .make_cpu = make<SignCodec>,
               .device = GCOMP_DEVICE_ENTRY(kSignDevice),
               .shareable_scales = false,
               .block_scales = [](const CodecSpec& s) { return s.options<SignOptions>().scaled; },
               .bias = Bias::kBiased,
               .exact_error = nullptr,
               .guarantee = "contractive: delta = 1/b (scale=l1); none: no guarantee",
               .bits = "n + 32 #blocks",
               .examples = {"sign", "sign:block=64"}});
  r.push_back(
      {.id = CodecId::kTopK,
       .name = "topk",
       .keys = {{&kK, "K"}, {&kRatio}, {&kIndex, "plain|rice"}},
       .defaults = TopKOptions{},
       .check = nullptr,
       // index=plain, the default, is not written: the canonical text (and so every frame)
       // of a plain topk spec is the one of wire format v1 before the option existed.
       .canonical =
           [](const CodecSpec& s) {
             return sparse_size_canonical(s) +
                    (s.options<TopKOptions>().index == IndexCode::kRice ? "," + kv(kIndex, s) : "");
           },
       .make_cpu = make<SparseCodec>,
       .device = GCOMP_DEVICE_ENTRY(kTopKDevice),
       .shareable_scales = false,
       .block_scales = nullptr,
       .bias = Bias::kBiased,
       .exact_error = nullptr,
       .guarantee = "contractive: delta = k/n",
       .bits = "k (32 + ceil(log2 n)); index=rice: 32 k + 32 + 32 floor((k-1)/1024) + sum_j [((g_j-1) >> b) "
               "+ 1 + b], b = floor(log2(n/k)); buffer: worst case",
       .examples = {"topk:ratio=0.0078125", "topk:ratio=0.03125", "topk:ratio=0.125", "topk:ratio=0.0078125,index=rice",
                    "topk:ratio=0.03125,index=rice", "topk:ratio=0.125,index=rice"}});
  r.push_back({.id = CodecId::kRandK,
               .name = "randk",
               .keys = {{&kK, "K"}, {&kRatio}, {&kUnbiased}},
               .defaults = RandKOptions{},
               .check = nullptr,
               .canonical = [](const CodecSpec& s) { return sparse_size_canonical(s) + "," + kv(kUnbiased, s); },
               .make_cpu = make<SparseCodec>,
               .device = GCOMP_DEVICE_ENTRY(kRandKDevice),
               .shareable_scales = false,
               .block_scales = nullptr,
               .bias = Bias::kByOption,
               .exact_error =
                   [](const Codec& c, std::span<const float> x) {
                     if (!c.spec().options<RandKOptions>().unbiased) return kNaN;
                     const double k = static_cast<double>(sparse_k_of(c.spec(), c.num_elems()));
                     return k > 0 ? (static_cast<double>(c.num_elems()) / k - 1.0) * sq_norm(x) : 0.0;
                   },
               .guarantee = "unbiased=1: omega = n/k - 1; unbiased=0: delta = k/n",
               .bits = "32 k + 64",
               .examples = {"randk:ratio=0.0078125", "randk:ratio=0.03125", "randk:ratio=0.125"},
               .rejected_key = "index",
               .rejected_why = "randk sends no indices (the receiver regenerates them from the seed), so it has "
                               "no key 'index'"});
  r.push_back({.id = CodecId::kNatural,
               .name = "natural",
               .keys = {},
               .defaults = NoOptions{},
               .check = nullptr,
               .canonical = [](const CodecSpec&) { return std::string(); },
               .make_cpu = make<NaturalCodec>,
               .device = GCOMP_DEVICE_ENTRY(kNaturalDevice),
               .shareable_scales = false,
               .block_scales = nullptr,
               .bias = Bias::kUnbiased,
               .exact_error =
                   [](const Codec&, std::span<const float> x) {
                     double v = 0.0;
                     for (float t : x) {
                       if (t == 0.0f) continue;
                       const double at = std::fabs(static_cast<double>(t));
                       const double a = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(at))));
                       v += (2.0 * a - at) * (at - a);
                     }
                     return v;
                   },
               .guarantee = "unbiased: omega = 1/8",
               .bits = "9 n",
               .examples = {"natural"}});
  r.push_back({.id = CodecId::kNatDither,
               .name = "natdither",
               .keys = {{&kLevels}, {&kNorm, "l2|linf|l1|lp"}, {&kP}, {&kBlock}},
               .defaults = DitherOptions{.levels = 3},
               .check = nullptr,
               .canonical = dither_canonical,
               .make_cpu = make<DensePlaneCodec>,
               .device = GCOMP_DEVICE_ENTRY(kNatDitherDevice),
               .shareable_scales = true,
               .block_scales = always,
               .bias = Bias::kUnbiased,
               .exact_error = dither_family_error,
               .guarantee = "unbiased: omega <= 1/8 + (b^(1/r)/2^(s-1)) min(1, b^(1/r)/2^(s-1)), r = min(p,2)",
               .bits = "32 ceil(n/b) + n (1 + ceil(log2(s+1)))",
               .examples = {"natdither:levels=1,norm=l2", "natdither:levels=3,norm=l2", "natdither:levels=7,norm=l2"}});
  r.push_back({.id = CodecId::kSDither,
               .name = "sdither",
               .keys = {{&kLevels}, {&kNorm, "l2|linf"}, {&kBlock}, {&kCode, "gamma|delta"}, {&kChunk}},
               .defaults = SDitherOptions{},
               .check =
                   [](const CodecSpec& s, const std::string& t, const SpecKeyValues&) {
                     const Norm norm = s.options<SDitherOptions>().norm;
                     if (norm != Norm::kL2 && norm != Norm::kLinf) bad_spec(t, "sdither supports norm=l2 or norm=linf");
                   },
               .canonical =
                   [](const CodecSpec& s) {
                     return kv(kLevels, s) + "," + kv(kNorm, s) + "," + kv(kBlock, s) + "," + kv(kCode, s) + "," +
                            kv(kChunk, s);
                   },
               .make_cpu = make<SDitherCodec>,
               .device = GCOMP_DEVICE_ENTRY(kSDitherDevice),
               .shareable_scales = true,
               .block_scales = always,
               .bias = Bias::kUnbiased,
               .exact_error = dither_family_error,
               .guarantee = "unbiased: as dither (same quantizer); s=1: l2 sqrt(b)-1, linf (sqrt(b)-1)/2",
               .bits = "32 m + 32 + 32 ceil(n/C) + sum_nz [len(gap) + 1 + [s>1] len(level)]; buffer: worst case",
               .examples = {"sdither:levels=1,norm=l2", "sdither:levels=1,norm=l2,code=delta",
                            "sdither:levels=4,norm=linf", "sdither:levels=32,norm=l2"}});
  r.push_back(
      {.id = CodecId::kSpherical,
       .name = "spherical",
       .keys = {{&kSphereBlock}, {&kSphereBits}, {&kUnscaled}},
       .defaults = SphericalOptions{},
       .check =
           [](const CodecSpec& s, const std::string& t, const SpecKeyValues&) {
             const SphericalOptions& o = s.options<SphericalOptions>();
             if ((int64_t{1} << o.index_bits) > (int64_t{1} << 22) / o.dim)
               bad_spec(t, "2^bits * block = 2^" + std::to_string(o.index_bits) + " * " + std::to_string(o.dim) +
                               " exceeds the encoder work cap 2^22 normals per block");
           },
       .canonical =
           [](const CodecSpec& s) { return kv(kSphereBlock, s) + "," + kv(kSphereBits, s) + "," + kv(kUnscaled, s); },
       .make_cpu = make<SphericalCodec>,
       .device = GCOMP_DEVICE_ENTRY(kSphericalDevice),
       .shareable_scales = false,
       .block_scales = always,
       .bias = Bias::kByOption,
       .exact_error = [](const Codec& c,
                         std::span<const float> x) { return static_cast<const SphericalCodec&>(c).exact_error(x); },
       .guarantee = "unbiased: omega = 1/beta(m_b,B)^2 - 1 for every input; unscaled=1: delta = 2 beta - 1 if "
                    "beta > 1/2",
       .bits = "sum_blocks (B + 32)",
       .examples = {"spherical:block=8,bits=8", "spherical:block=16,bits=12", "spherical:block=4,bits=16"}});
  r.push_back({.id = CodecId::kGrid,
               .name = "grid",
               .keys = {{&kStep}, {&kGridBits}},
               .defaults = GridOptions{},
               .check =
                   [](const CodecSpec& s, const std::string& t, const SpecKeyValues&) {
                     // The largest level must decode to a finite fp32 value (issue 18 #11).
                     const GridOptions& o = s.options<GridOptions>();
                     if (o.quantum * static_cast<double>((int64_t{1} << (o.level_bits - 1)) - 1) >
                         static_cast<double>(std::numeric_limits<float>::max()))
                       bad_spec(t,
                                "step * (2^(bits-1) - 1) is beyond the float32 range: the largest levels would "
                                "decode to Inf");
                   },
               .canonical = [](const CodecSpec& s) { return kv(kStep, s) + "," + kv(kGridBits, s); },
               .make_cpu = make_grid_codec,
               .device = GCOMP_DEVICE_ENTRY(kGridDevice),
               .shareable_scales = false,
               .block_scales = nullptr,
               .bias = Bias::kBiased,
               .exact_error = nullptr,
               .guarantee = "deterministic, absolute: |C(x)_i - x_i| <= step/2 while |x_i| <= (2^(bits-1)-1) step "
                            "(saturates beyond)",
               .bits = "bits n",
               .examples = {"grid"}});
  return r;
}

}  // namespace

const std::vector<CodecDescriptor>& codec_registry() {
  static const std::vector<CodecDescriptor> registry = [] {
    std::vector<CodecDescriptor> r = build_registry();
    for (size_t i = 1; i < r.size(); ++i) {
      GCOMP_EXPECTS(static_cast<uint32_t>(r[i - 1].id) < static_cast<uint32_t>(r[i].id), gcompErrorInternal,
                    "codec registry: entries must be in increasing wire-id order");
    }
    return r;
  }();
  return registry;
}

const CodecDescriptor& codec_descriptor(CodecId id) {
  for (const CodecDescriptor& d : codec_registry()) {
    if (d.id == id) return d;
  }
  GCOMP_FAIL(gcompErrorInvalidArgument, "unknown codec id " + std::to_string(static_cast<uint32_t>(id)));
}

const CodecDescriptor* find_codec(std::string_view name) {
  for (const CodecDescriptor& d : codec_registry()) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

std::string codec_names() {
  std::string s;
  for (const CodecDescriptor& d : codec_registry()) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

DitherOptions dither_quantizer(const CodecSpec& spec) {
  if (const DitherOptions* o = spec.options_if<DitherOptions>()) return *o;
  if (spec.id() == CodecId::kTernGrad) return DitherOptions{.levels = 1, .norm = Norm::kLinf, .p = 0.0, .block = 0};
  if (const SDitherOptions* o = spec.options_if<SDitherOptions>())
    return DitherOptions{
        .levels = o->levels, .norm = o->norm, .p = o->norm == Norm::kL2 ? 2.0 : 0.0, .block = o->block};
  GCOMP_FAIL(gcompErrorInternal, "dither_quantizer: " + std::string(spec.name()) + " is not a dither-family codec");
}

int64_t sparse_k_of(const CodecSpec& spec, int64_t num_elems) {
  if (const TopKOptions* o = spec.options_if<TopKOptions>()) return sparse_k(num_elems, o->k, o->ratio);
  if (const RandKOptions* o = spec.options_if<RandKOptions>()) return sparse_k(num_elems, o->k, o->ratio);
  GCOMP_FAIL(gcompErrorInternal, "sparse_k_of: " + std::string(spec.name()) + " is not topk or randk");
}

}  // namespace gcomp::detail
