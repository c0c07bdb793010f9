// SPDX-License-Identifier: Apache-2.0
// make_codec: the CPU factory of the codec's registry entry (registry.hpp).
#include "host/codecs/registry.hpp"

namespace gcomp {

std::unique_ptr<Codec> make_codec(const CodecSpec& spec, const Layout& layout) {
  return detail::codec_descriptor(spec.id()).make_cpu(spec, layout);
}

}  // namespace gcomp
