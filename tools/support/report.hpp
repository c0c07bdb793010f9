// SPDX-License-Identifier: Apache-2.0
/// @file report.hpp
/// @brief Text and JSON formatting of the tools' reports: bits-vs-variance rows (gcomp-codec bits,
/// gcomp-bench bits) and framed-payload headers (gcomp-codec info). Part of the tools' support
/// library (gcomp_support), not of the installed gcomp::gcomp.
#pragma once

#include <gcomp/bits_report.hpp>
#include <gcomp/wire.hpp>

#include <string>
#include <vector>

namespace gcomp {

/// One JSON object; R values that are n/a are null.
std::string bits_report_json(const BitsReport& report);

/// The text cells of one report's table row, as `gcomp-codec bits` and `gcomp-bench bits` print
/// them: the declared guarantee ("omega<=W", "delta>=D" or "none"), the measured error with how it
/// was measured ("omega=W (exact)", "eps=E (mc)", ...), and both R values with `r_digits`
/// decimals ("n/a" when not finite).
struct BitsReportText {
  std::string declared, measured, r_declared, r_measured;
};
BitsReportText bits_report_text(const BitsReport& report, int r_digits);

/// The codecs of the spec's reference table (§5.1, §5.2): what `gcomp-codec bits` prints by default.
std::vector<std::string> bits_report_default_specs();

/// A framed payload's header as one JSON object (codec, params, n, segments, bytes, seed, step,
/// rank, ...), as `gcomp-codec info` prints it.
std::string frame_info_json(const FrameInfo& info);

}  // namespace gcomp
