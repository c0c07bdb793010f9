// SPDX-License-Identifier: Apache-2.0
/// @file registry.hpp
/// @brief The codec registry: one descriptor per codec, read by everything that needs to know
/// which codecs exist.
///
/// A descriptor holds a codec's name and wire id, its options type with its defaults, its spec
/// keys and their parsing, its canonical text, its CPU factory, its device entry (the CUDA path),
/// whether it accepts shared scales, its bias, its closed-form error (bits report), its
/// `gcomp-codec list` line and its example specs.
/// CodecSpec::parse() / canonical(), make_codec(), list_codecs(), bits_report() and the device
/// dispatch (cuda/dispatch/device_codec.cu) read it; none keeps its own list of codecs.
/// docs/codecs.md "Adding a codec" walks through a new entry.
#pragma once

#include <gcomp/codec.hpp>

#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace gcomp::cuda::detail {
struct DeviceCodecEntry;  // cuda/dispatch/plan.cuh (CUDA builds)
}  // namespace gcomp::cuda::detail

namespace gcomp::detail {

/// What a codec's default form promises about E C(x).
enum class Bias : int {
  kExact = 0,     ///< C(x) = x
  kUnbiased = 1,  ///< E C(x) = x
  kBiased = 2,    ///< E C(x) != x in general (contractive or deterministic)
  kByOption = 3,  ///< a key decides (randk unbiased=, spherical unscaled=, terngrad clip=)
};

/// The parsed key=value pairs of one spec text, by key (the order in which they are applied).
using SpecKeyValues = std::map<std::string, std::string>;

/// One key of the spec text: how it is parsed into a codec's options and how its value is written.
/// A key sets one field; it serves every options type with a field of that name and quantity
/// (`levels` of DitherOptions and SDitherOptions). Keys of the same name and another quantity are
/// other keys (the spherical `block` is SphericalOptions::dim).
struct CodecKey {
  const char* name;
  /// Parses @p value into @p options; throws gcompErrorInvalidArgument quoting @p text on a bad value.
  void (*apply)(CodecOptions& options, const std::string& text, const std::string& value);
  /// The key's value in @p options as the canonical text writes it.
  std::string (*value_text)(const CodecOptions& options);
};

/// A key as one codec uses it; `choices` replaces the default in `gcomp-codec list` ("l2|linf").
struct CodecKeyUse {
  const CodecKey* key;
  const char* choices = nullptr;
};

/// Everything gcomp knows about one codec.
struct CodecDescriptor {
  CodecId id;                     ///< wire id (never renumbered)
  const char* name;               ///< spec name
  std::vector<CodecKeyUse> keys;  ///< valid keys, in the order messages and the list show them
  /// The codec's options type, holding its defaults (natdither DitherOptions{.levels = 3}): the
  /// spec parser starts from it and CodecSpec(id, options) accepts only this alternative.
  CodecOptions defaults;
  /// Checks across keys after all were applied (nullable); throws quoting @p text.
  void (*check)(const CodecSpec& spec, const std::string& text, const SpecKeyValues& given);
  std::string (*canonical)(const CodecSpec& spec);  ///< the text after "name:" ("" for none)
  std::unique_ptr<Codec> (*make_cpu)(const CodecSpec& spec, const Layout& layout);  ///< CPU codec
  /// The codec's device path (plan, workspace, encode, decode), defined in its own CUDA launcher
  /// file and named here with GCOMP_DEVICE_ENTRY (registry.cpp); null: no GPU kernels, or a build
  /// without CUDA. DeviceCodec reads nothing else about a codec.
  const ::gcomp::cuda::detail::DeviceCodecEntry* device;
  bool shareable_scales;  ///< compute_scales / encode_with_scales: scales may be shared (max over workers)
  bool (*block_scales)(const CodecSpec& spec);  ///< payload holds fp32 block scales of block_reduce (GPU plan)
  Bias bias;
  /// E|C(x) - x|^2 in closed form, or NaN (then the bits report measures); nullable = NaN.
  double (*exact_error)(const Codec& codec, std::span<const float> x);
  const char* guarantee;  ///< `gcomp-codec list`: declared omega or delta, as a formula
  const char* bits;       ///< `gcomp-codec list`: message size formula
  /// Example specs that sweep the codec's parameters (`gcomp-bench bits` runs them all); the
  /// first is the plain name or its most common form.
  std::vector<const char*> examples;
  const char* rejected_key = nullptr;  ///< a key users try that this codec lacks on purpose ...
  const char* rejected_why = nullptr;  ///< ... and why (the message names it)
};

/// Every codec, in wire-id order.
[[nodiscard]] const std::vector<CodecDescriptor>& codec_registry();
/// The descriptor of @p id. @throws gcomp::Error gcompErrorInvalidArgument for an unknown id.
[[nodiscard]] const CodecDescriptor& codec_descriptor(CodecId id);
/// The descriptor named @p name, or nullptr.
[[nodiscard]] const CodecDescriptor* find_codec(std::string_view name);
/// The names of every codec, comma separated ("identity, dither, ...").
[[nodiscard]] std::string codec_names();

/// The dither quantizer of dither, natdither, terngrad (one level, l_inf, one block per segment)
/// and sdither (its norm's p): levels, norm, p and block. @throws gcompErrorInternal for others.
[[nodiscard]] DitherOptions dither_quantizer(const CodecSpec& spec);
/// k of topk or randk for @p num_elems elements (sparse_k of its k and ratio).
/// @throws gcompErrorInternal for other codecs.
[[nodiscard]] int64_t sparse_k_of(const CodecSpec& spec, int64_t num_elems);

/// Throws gcompErrorInvalidArgument: "codec spec '<text>': <why>".
[[noreturn]] void bad_spec(const std::string& text, const std::string& why);

}  // namespace gcomp::detail
