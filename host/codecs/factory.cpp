// SPDX-License-Identifier: Apache-2.0
#include "host/codecs/dense_planes.hpp"
#include "host/codecs/sdither.hpp"
#include "host/codecs/simple_codecs.hpp"
#include "host/codecs/grid.hpp"
#include "host/codecs/spherical.hpp"

namespace gcomp {

std::unique_ptr<Codec> make_codec(const CodecSpec& spec, const Layout& layout) {
  switch (spec.id) {
    case CodecId::kIdentity: return std::make_unique<detail::IdentityCodec>(spec, layout);
    case CodecId::kDither:
    case CodecId::kTernGrad:
    case CodecId::kNatDither: return std::make_unique<detail::DensePlaneCodec>(spec, layout);
    case CodecId::kSign: return std::make_unique<detail::SignCodec>(spec, layout);
    case CodecId::kTopK:
    case CodecId::kRandK: return std::make_unique<detail::SparseCodec>(spec, layout);
    case CodecId::kNatural: return std::make_unique<detail::NaturalCodec>(spec, layout);
    case CodecId::kSDither: return std::make_unique<detail::SDitherCodec>(spec, layout);
    case CodecId::kSpherical: return std::make_unique<detail::SphericalCodec>(spec, layout);
    case CodecId::kGrid: return detail::make_grid_codec(spec, layout);
  }
  GCOMP_FAIL(gcompErrorInvalidArgument, "unknown codec id " + std::to_string(static_cast<uint32_t>(spec.id)));
}

}  // namespace gcomp
