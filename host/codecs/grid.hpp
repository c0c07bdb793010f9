// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <gcomp/codec.hpp>

#include <memory>

namespace gcomp::detail {

/// grid: deterministic rounding to the grid step * Z with saturating `bits`-bit levels.
std::unique_ptr<Codec> make_grid_codec(const CodecSpec& spec, const Layout& layout);

}  // namespace gcomp::detail
