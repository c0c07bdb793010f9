// SPDX-License-Identifier: Apache-2.0
/// @file bits_report.hpp
/// @brief Bits-vs-variance report of a codec on one input (spec/ALGORITHMS.md §5.2(c), §9.2 T17).
///
/// For a codec and an input x, the report gives the actual message size, the declared worst case
/// (omega or delta), the measured error on x, and the ratio R = bits / b_LB to the lower bound
/// b_LB = (n/2) log2(1/eps) of §5.1 (eps = omega/(1+omega) for unbiased codecs, 1 - delta for
/// contractive ones), twice: declared guarantee at the worst-case length, measured error at the
/// actual length. gcomp-codec `bits` and gcomp-bench `bits` print it (their formatting is in
/// tools/support/report.hpp, not part of the library).
///
/// @code
///   auto codec = gcomp::make_codec("sdither:levels=4,norm=linf", gcomp::Layout(x.size()));
///   gcomp::BitsReport r = gcomp::bits_report(*codec, x);
///   std::printf("%.1f bits, R = %.2f\n", r.bits, r.r_measured);
/// @endcode
/// Thread safety: pure function of its arguments (no shared state).
#pragma once

#include <gcomp/codec.hpp>

#include <cstdint>
#include <span>
#include <string>

namespace gcomp {

/// How the measured error was obtained.
enum class ErrorMeasure {
  kExact,       ///< closed form for this input (dither family §2.2, natural, rand-k, spherical)
  kMonteCarlo,  ///< average of |C(x) - x|^2 / |x|^2 over `draws` keys
  kSingleDraw,  ///< deterministic codec: |C(x) - x|^2 / |x|^2 of the one output
};

struct BitsReport {
  std::string spec;                ///< canonical codec spec
  int64_t num_elems = 0;           ///< d
  double bits = 0;                 ///< this message: Codec::payload_bits (scales, directories, lengths, seeds)
  double bits_worst = 0;           ///< declared length: Codec::encoded_bits (worst case for variable length)
  double bits_per_coord = 0;       ///< bits / d (0 when d = 0)
  Guarantee declared;              ///< the codec's declared worst case
  bool measured_is_omega = false;  ///< true: `measured` is omega-hat (unbiased codec); else eps-hat
  double measured = 0;             ///< omega-hat = E|C(x)-x|^2/|x|^2, or eps-hat = |C(x)-x|^2/|x|^2 (biased)
  ErrorMeasure method = ErrorMeasure::kExact;
  int draws = 0;                ///< Monte Carlo draws (0 otherwise)
  double lb_declared_bits = 0;  ///< b_LB for the declared guarantee (NaN: n/a)
  double lb_measured_bits = 0;  ///< b_LB for the measured error (NaN: n/a)
  double r_declared = 0;        ///< bits_worst / lb_declared_bits; NaN when n/a (omega = 0, no guarantee)
  double r_measured = 0;        ///< bits / lb_measured_bits; NaN when n/a (measured error 0)
};

struct BitsReportOptions {
  RngKey key{};    ///< key of the reported message (and the first Monte Carlo draw)
  int draws = 32;  ///< K for codecs measured by Monte Carlo
};

/// The report of `codec` on x (codec.num_elems() values, finite).
/// @throws gcomp::Error as Codec::encode (gcompErrorInvalidArgument, gcompErrorNonFinite).
BitsReport bits_report(const Codec& codec, std::span<const float> x, const BitsReportOptions& options = {});

/// b_LB = (n/2) log2(1/eps) (§5.1); NaN when eps <= 0 or eps >= 1 gives no finite positive bound.
double lower_bound_bits(int64_t num_elems, double eps);

}  // namespace gcomp
