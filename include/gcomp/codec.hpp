// SPDX-License-Identifier: Apache-2.0
/// @file codec.hpp
/// @brief Codec specs, tensor layouts and the CPU reference codecs.
///
/// A codec is built from a spec string (`name[:key=value,...]`, see `gcomp-codec list`) and a
/// tensor layout (the segment sizes of one flat gradient buffer). Its raw payload has an exact size
/// known before any data exists (`encoded_bytes`). The math of every codec is in
/// spec/ALGORITHMS.md; the byte layout of every payload in docs/wire-format.md.
///
/// Thread safety: a Codec is immutable after construction; its methods may run concurrently.
#pragma once

#include <gcomp/detail/philox.hpp>
#include <gcomp/error.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace gcomp {

/// Where a codec's random bits come from (seed, encoding rank, step, uplink/downlink stream).
using RngKey = detail::RngKey;

/// Codec identifiers as written on the wire. Never renumbered.
enum class CodecId : uint32_t {
  kIdentity = 1,
  kDither = 2,
  kTernGrad = 3,
  kSign = 4,
  kTopK = 5,
  kRandK = 6,
  kNatural = 7,
  kNatDither = 8,
  kSDither = 9,     ///< sparse-coded dithering (spec/ALGORITHMS.md §5.2(a))
  kSpherical = 10,  ///< spherical codebook (spec/ALGORITHMS.md §5.2(b))
  kGrid = 11,       ///< deterministic rounding to a grid (spec/ALGORITHMS.md §6.1, §7.1)
};

/// Norm used by dithering codecs: l1, l2, l_inf or a general l_p (p in (1, inf)).
enum class Norm : uint32_t { kL1 = 1, kL2 = 2, kLinf = 3, kLp = 4 };

/// Elias code of the sdither records: gamma (2 floor(log2 n) + 1 bits) or delta.
enum class EliasCode : uint32_t { kGamma = 1, kDelta = 2 };

/// How topk sends its indices: plain ceil(log2 n)-bit words (wire format v1 §3.4) or Rice-coded
/// gaps (§3.4.1, a variable-length payload).
enum class IndexCode : uint32_t { kPlain = 1, kRice = 2 };

// ---- codec options --------------------------------------------------------------------------
// One options struct per codec family, each field one quantity. The spec keys (what `gcomp-codec
// list` shows) are named after each field; where a key name differs from the field (spherical and
// grid) the field's comment says so. Defaults are the spec's defaults unless a codec's registry
// entry has its own (natdither: levels = 3). kName names the type in messages.

/// identity and natural: no parameters.
struct NoOptions {
  static constexpr const char* kName = "NoOptions";  ///< for messages
  bool operator==(const NoOptions&) const = default;
};

/// dither and natdither (spec/ALGORITHMS.md §2.2, §5.3).
struct DitherOptions {
  static constexpr const char* kName = "DitherOptions";  ///< for messages
  uint32_t levels = 1;                                   ///< key `levels`: s >= 1 (natdither's default: 3)
  Norm norm = Norm::kL2;                                 ///< key `norm`
  /// key `p`: the l_p exponent, given with norm = kLp (p > 1, p != 2). The other norms store their
  /// own: l1 1, l2 2, l_inf 0 (infinity); CodecSpec sets it from the norm.
  double p = 2.0;
  int64_t block = 0;  ///< key `block`: quantization block size; 0 = one block per segment
  bool operator==(const DitherOptions&) const = default;
};

/// terngrad (one l_inf block per segment, one level).
struct TernGradOptions {
  static constexpr const char* kName = "TernGradOptions";  ///< for messages
  double clip = 0.0;                                       ///< key `clip`: clip at clip * sigma; 0 = off
  bool operator==(const TernGradOptions&) const = default;
};

/// sign.
struct SignOptions {
  static constexpr const char* kName = "SignOptions";  ///< for messages
  int64_t block = 0;                                   ///< key `block`: scale block size; 0 = one block per segment
  bool scaled = true;  ///< key `scale`: l1 (scale = mean |x| per block) or none (plain signs)
  bool operator==(const SignOptions&) const = default;
};

/// topk.
struct TopKOptions {
  static constexpr const char* kName = "TopKOptions";  ///< for messages
  int64_t k = 0;                                       ///< key `k`: fixed k >= 1; 0 = use ratio
  double ratio = 0.01;                  ///< key `ratio`: k = max(1, floor(ratio * n)) when k == 0; (0, 1]
  IndexCode index = IndexCode::kPlain;  ///< key `index`: plain index words or Rice-coded gaps
  bool operator==(const TopKOptions&) const = default;
};

/// randk.
struct RandKOptions {
  static constexpr const char* kName = "RandKOptions";  ///< for messages
  int64_t k = 0;                                        ///< key `k`: fixed k >= 1; 0 = use ratio
  double ratio = 0.01;   ///< key `ratio`: k = max(1, floor(ratio * n)) when k == 0; (0, 1]
  bool unbiased = true;  ///< key `unbiased`: scale by n/k on decode
  bool operator==(const RandKOptions&) const = default;
};

/// sdither: sparse-coded dithering (spec/ALGORITHMS.md §5.2(a)).
struct SDitherOptions {
  static constexpr const char* kName = "SDitherOptions";  ///< for messages
  uint32_t levels = 1;                                    ///< key `levels`: s >= 1
  Norm norm = Norm::kL2;                                  ///< key `norm`: l2 or linf
  int64_t block = 0;                   ///< key `block`: quantization block size; 0 = one block per segment
  EliasCode code = EliasCode::kGamma;  ///< key `code`: record code
  int64_t chunk = 4096;                ///< key `chunk`: coordinates per directory chunk, 1..2^24
  bool operator==(const SDitherOptions&) const = default;
};

/// spherical codebook (spec/ALGORITHMS.md §5.2(b)).
struct SphericalOptions {
  static constexpr const char* kName = "SphericalOptions";  ///< for messages
  int64_t dim = 16;         ///< key `block`: m_b >= 1, the dimension of one codebook block
  uint32_t index_bits = 8;  ///< key `bits`: codebook index bits B in 1..16 (2^B codewords)
  bool unscaled = false;    ///< key `unscaled`: decode nu * c (biased) instead of (nu / beta) * c
  bool operator==(const SphericalOptions&) const = default;
};

/// grid: deterministic rounding to a grid (spec/ALGORITHMS.md §6.1, §7.1).
struct GridOptions {
  static constexpr const char* kName = "GridOptions";  ///< for messages
  double quantum = 0.00390625;                         ///< key `step`: the grid quantum Delta > 0 (default 2^-8)
  uint32_t level_bits = 16;                            ///< key `bits`: level width in bits, 2..32
  bool operator==(const GridOptions&) const = default;
};

/// The options of any codec. Which alternative a codec takes is part of its registry entry.
using CodecOptions = std::variant<NoOptions, DitherOptions, TernGradOptions, SignOptions, TopKOptions, RandKOptions,
                                  SDitherOptions, SphericalOptions, GridOptions>;

/// A validated codec spec: a codec and its options (defaults filled in). Immutable; build one by
/// parsing its text or from typed options:
/// ```
/// const CodecSpec a = CodecSpec::parse("sign:block=64");
/// const CodecSpec b(CodecId::kSign, SignOptions{.block = 64});
/// assert(a == b && a.options<SignOptions>().block == 64);
/// ```
class CodecSpec {
 public:
  /// identity.
  CodecSpec() = default;
  /// @p options must be the options type of @p id (DitherOptions for dither and natdither, ...)
  /// and in range, exactly what parse() accepts: every CodecSpec reads back from its canonical
  /// text. The l_p exponent of DitherOptions is set from its norm (see DitherOptions::p).
  /// @throws gcomp::Error gcompErrorInvalidArgument naming the codec and the problem.
  CodecSpec(CodecId id, CodecOptions options);

  /// Parses `name[:key=value,...]`. Unknown names, keys or bad values throw gcomp::Error
  /// (gcompErrorInvalidArgument) with a message that lists what is valid.
  static CodecSpec parse(std::string_view text);
  /// Canonical text: name and every parameter in a fixed order; parse(canonical()) == *this.
  [[nodiscard]] std::string canonical() const;
  [[nodiscard]] std::string_view name() const;
  [[nodiscard]] CodecId id() const { return id_; }
  /// The options, for std::visit.
  [[nodiscard]] const CodecOptions& options() const { return options_; }
  /// The options as type O.
  /// @throws gcomp::Error gcompErrorInvalidArgument when the codec's options are of another type
  ///         (e.g. SignOptions of a dither spec); the message names the codec and both types.
  template <class O>
  [[nodiscard]] const O& options() const {
    if (const O* o = std::get_if<O>(&options_)) return *o;
    wrong_options(O::kName);
  }
  /// The options as type O, or nullptr when the codec's options are of another type.
  template <class O>
  [[nodiscard]] const O* options_if() const {
    return std::get_if<O>(&options_);
  }
  bool operator==(const CodecSpec&) const = default;

 private:
  struct Unchecked {};
  CodecSpec(Unchecked, CodecId id, CodecOptions options) : id_(id), options_(std::move(options)) {}
  [[noreturn]] void wrong_options(const char* wanted) const;

  CodecId id_ = CodecId::kIdentity;
  CodecOptions options_{};
};

/// One line of `gcomp-codec list`: a codec, its parameters with defaults, and what it guarantees.
struct CodecDescription {
  std::string name;
  std::string params;     ///< e.g. "levels=1 norm=l2|linf|l1|lp p=2 block=0"
  std::string guarantee;  ///< declared omega or delta, as a formula
  std::string bits;       ///< message size formula
  /// Example specs sweeping the codec's parameters (what `gcomp-bench bits` runs by default).
  std::vector<std::string> examples;
};
/// Every codec this build knows, in wire-id order.
std::vector<CodecDescription> list_codecs();

/// Segments of one flat buffer. Blocks never cross a segment boundary.
class Layout {
 public:
  Layout() = default;
  /// One segment of `num_elems` elements.
  explicit Layout(int64_t num_elems);
  /// Several segments; every size must be >= 0.
  explicit Layout(std::vector<int64_t> segment_elems);

  [[nodiscard]] int64_t num_elems() const { return num_elems_; }
  [[nodiscard]] const std::vector<int64_t>& segments() const { return segments_; }
  [[nodiscard]] int64_t segment_offset(size_t s) const { return offsets_[s]; }
  /// FNV-1a 64 over the little-endian int64 segment sizes (docs/wire-format.md).
  [[nodiscard]] uint64_t digest() const;
  bool operator==(const Layout& o) const { return segments_ == o.segments_; }

 private:
  std::vector<int64_t> segments_;
  std::vector<int64_t> offsets_;
  int64_t num_elems_ = 0;
};

/// Blocks of a layout for block size `block` (0: one block per segment): global start offsets,
/// with a final entry equal to num_elems. Empty segments contribute no block.
std::vector<int64_t> block_offsets(const Layout& layout, int64_t block);

/// What a codec promises about its error (spec/ALGORITHMS.md §1, §9.3).
struct Guarantee {
  enum class Kind { kUnbiased, kContractive, kNone };
  Kind kind = Kind::kNone;
  double omega = 0.0;  ///< unbiased: E|C(x)-x|^2 <= omega |x|^2 for every x
  double delta = 0.0;  ///< contractive: E|C(x)-x|^2 <= (1-delta) |x|^2 for every x
};

/// CPU reference codec. The CUDA kernels produce byte-identical payloads for the same RngKey.
class Codec {
 public:
  virtual ~Codec() = default;
  Codec(const Codec&) = delete;
  Codec& operator=(const Codec&) = delete;

  [[nodiscard]] const CodecSpec& spec() const { return spec_; }
  [[nodiscard]] const Layout& layout() const { return layout_; }
  [[nodiscard]] int64_t num_elems() const { return layout_.num_elems(); }

  /// Exact size of the raw payload in bytes (no frame header). Variable-length codecs (sdither,
  /// topk with index=rice) always fill this many bytes: the message, then zero padding up to this
  /// worst-case size. It is the bound a communicator checks every message against.
  [[nodiscard]] virtual size_t encoded_bytes() const = 0;
  /// True when the bytes that carry the message (used_bytes()) depend on the data: sdither and
  /// topk with index=rice. Their payloads may travel short (docs/wire-format.md §6).
  [[nodiscard]] virtual bool variable_length() const { return false; }
  /// Bytes from the start of a payload through its length field: used_bytes() of a short payload
  /// needs at least these. Fixed-size codecs: encoded_bytes().
  [[nodiscard]] virtual size_t length_prefix_bytes() const { return encoded_bytes(); }
  /// Information bits of a message by the spec's formula (§9.2 T16). encoded_bytes() * 8 is this
  /// rounded up to whole 32-bit words (bit planes pad the last group of 32 elements). For a
  /// variable-length codec: the worst case over all messages (an upper bound of payload_bits).
  [[nodiscard]] virtual double encoded_bits() const = 0;
  /// Bytes of `payload` that carry the message (what a communicator sends and `gcomp-codec
  /// encode` writes); the rest of a full payload is zero padding. `payload` is a full payload
  /// (encoded_bytes() bytes) or a short one of at least length_prefix_bytes() bytes; the result
  /// comes from the length field alone, so for a short payload it may differ from its size (a
  /// lying or truncated message, which validate() rejects). Fixed-size codecs: encoded_bytes().
  /// @throws gcomp::Error gcompErrorCorruptPayload when the payload ends before its length field or
  ///         the length field is impossible (above the worst case).
  [[nodiscard]] virtual size_t used_bytes(std::span<const uint8_t> payload) const {
    (void)payload;
    return encoded_bytes();
  }
  /// The used size that a length field value gives (variable-length codecs: the u32 stored in the
  /// last 4 bytes of the length prefix; docs/wire-format.md §6). Fixed-size codecs: encoded_bytes().
  /// @throws gcomp::Error gcompErrorCorruptPayload when the value is above the worst case.
  [[nodiscard]] virtual size_t used_bytes_for_length(uint64_t length_field) const {
    (void)length_field;
    return encoded_bytes();
  }
  /// Information bits of this message (§5.2(c): scales, directories, length fields and records
  /// included). Fixed-size codecs: encoded_bits().
  /// @throws gcomp::Error gcompErrorCorruptPayload when the payload's length field is impossible.
  [[nodiscard]] virtual double payload_bits(std::span<const uint8_t> payload) const {
    (void)payload;
    return encoded_bits();
  }
  /// Declared worst-case omega or delta for this layout.
  [[nodiscard]] virtual Guarantee guarantee() const = 0;
  /// True when the codec draws random bits (its payload depends on the RngKey).
  [[nodiscard]] virtual bool randomized() const = 0;
  /// Number of fp32 scales in the payload (0 for codecs without per-block scales).
  [[nodiscard]] virtual int64_t num_scales() const { return 0; }

  /// Encodes x (num_elems floats) into payload (encoded_bytes bytes).
  /// @throws gcomp::Error gcompErrorNonFinite if x holds NaN or Inf; payload is then untouched.
  virtual void encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const = 0;

  /// Computes the per-block scales encode would use (num_scales() values). Codecs that allow
  /// shared scales (terngrad, dither with l_inf) accept them back through encode_with_scales.
  virtual void compute_scales(std::span<const float> x, std::span<float> scales) const;
  /// encode() with caller-given scales (e.g. the max over workers: TernGrad scaler sharing).
  /// Each scale must be >= the block's own max |x| for the result to stay unbiased.
  virtual void encode_with_scales(std::span<const float> x, std::span<const float> scales, const RngKey& key,
                                  std::span<uint8_t> payload) const;

  /// Checks a raw payload without decoding it. A payload is either full (encoded_bytes() bytes)
  /// or, for a variable-length codec, short: exactly used_bytes() bytes, as its length field says
  /// (docs/wire-format.md §6); any other size is rejected.
  /// @throws gcomp::Error gcompErrorCorruptPayload naming the first problem found.
  virtual void validate(std::span<const uint8_t> payload) const = 0;

  /// out[i] = out[i] + weight * decode(payload)[i]. `payload` full or short, as validate() accepts.
  /// Validates first; on error out is untouched.
  virtual void decode_accumulate(std::span<const uint8_t> payload, const RngKey& key, float weight,
                                 std::span<float> out) const = 0;
  /// out = decode(payload). Validates first; on error out is untouched.
  virtual void decode(std::span<const uint8_t> payload, const RngKey& key, std::span<float> out) const = 0;

  /// True when decode_range works: the dense codecs (identity, dither, terngrad, natdither, sign,
  /// natural, grid), whose element i depends on a fixed part of the payload only.
  [[nodiscard]] virtual bool range_decodable() const { return false; }
  /// Elements [begin, end) of the decode of a payload that validate() accepted:
  /// out[i - begin] = decode(payload)[i], or out[i - begin] + weight * decode(payload)[i] when
  /// `accumulate`. Nothing is checked (callers validate once per payload, then decode pieces, for
  /// example on several threads).
  /// @throws gcomp::Error gcompErrorNotSupported when !range_decodable().
  virtual void decode_range(std::span<const uint8_t> payload, int64_t begin, int64_t end, float weight, bool accumulate,
                            float* out) const;

  /// Decode-reduce of several payloads: for j = 0, 1, ... in this order,
  /// out[i] = out[i] + weights[j] * decode(payloads[j])[i], bit for bit what decode_accumulate of
  /// each payload in turn gives (keys[j] is payload j's key). Every payload is validated before
  /// out changes; on error out is untouched. The dense codecs do it in one pass over out.
  /// @throws gcomp::Error gcompErrorInvalidArgument when the spans' sizes disagree,
  ///         gcompErrorCorruptPayload naming the first bad payload.
  virtual void decode_reduce(std::span<const std::span<const uint8_t>> payloads, std::span<const RngKey> keys,
                             std::span<const float> weights, std::span<float> out) const;

  /// Error feedback (DESIGN.md §2): payload = C(p); e = p - decode(payload). Range-decodable
  /// codecs update e in one pass after the encode.
  /// p and e may alias (the memory is then updated in place).
  void encode_ef(std::span<const float> p, const RngKey& key, std::span<uint8_t> payload, std::span<float> e) const;
  /// Elements [begin, end) of an input that is not stored, written to dst[0, end - begin). It may
  /// be called several times for the same elements, from several threads at once, and must give
  /// the same values every time.
  using Source = std::function<void(int64_t begin, int64_t end, float* dst)>;
  /// encode_ef() of the input p that `source` gives (e.g. a sum of two arrays, or a decoded mean
  /// plus an error), with the same payload and e bit for bit as encode_ef(p) of the stored input.
  /// A codec that encodes from a source (scaled sign with blocks on 32-element boundaries) never
  /// stores p: the encode produces it tile by tile and the e pass again per L1-sized sub-range, so
  /// p costs what its own inputs cost to read, twice (once when every block fits in one tile: the
  /// block's e is then written in the same pass). The others store p in e first. On error the
  /// payload is untouched and e is unspecified (the Session writes it into a second buffer).
  void encode_ef_from(const Source& source, const RngKey& key, std::span<uint8_t> payload, std::span<float> e) const;
  /// DIANA (spec §8.1): delta = g - h; payload = Q(delta); h = h + alpha * decode(payload).
  /// `delta` is caller scratch of num_elems floats.
  void encode_diana(std::span<const float> g, std::span<float> h, float alpha, const RngKey& key,
                    std::span<uint8_t> payload, std::span<float> delta) const;

 protected:
  Codec(CodecSpec spec, Layout layout) : spec_(std::move(spec)), layout_(std::move(layout)) {}
  void check_encode_args(std::span<const float> x, std::span<uint8_t> payload) const;
  /// What encode_from() did.
  enum class SourceEncode {
    kUnsupported,      ///< nothing: the codec has no encoder from a source
    kPayload,          ///< the payload (encode_ef_from then runs the e pass)
    kPayloadAndError,  ///< the payload and e, in the same pass over the source
  };
  /// encode() of the input that `source` gives, tile by tile, without storing it; payload has at
  /// least encoded_bytes() bytes, e num_elems() elements (on error: payload untouched, e
  /// unspecified).
  virtual SourceEncode encode_from(const Source& source, const RngKey& key, std::span<uint8_t> payload,
                                   std::span<float> e) const {
    (void)source;
    (void)key;
    (void)payload;
    (void)e;
    return SourceEncode::kUnsupported;
  }
  /// The e pass of a range-decodable codec's encode_ef: e = p - decode(msg), p from `source`.
  void ef_update(const Source& source, std::span<const uint8_t> msg, std::span<float> e) const;
  void check_decode_args(std::span<const uint8_t> payload, std::span<float> out) const;
  /// The argument checks of decode_reduce: matching sizes, then every payload's check_decode_args.
  void check_reduce_args(std::span<const std::span<const uint8_t>> payloads, std::span<const RngKey> keys,
                         std::span<const float> weights, std::span<float> out) const;
  /// The size rule of validate(): full, or (variable-length) short with exactly the used size.
  /// @throws gcomp::Error gcompErrorCorruptPayload otherwise.
  void check_payload_size(std::span<const uint8_t> payload) const;

 private:
  CodecSpec spec_;
  Layout layout_;
};

/// Builds the CPU codec of a spec for a layout.
/// @throws gcomp::Error gcompErrorInvalidArgument when the spec does not fit the layout.
std::unique_ptr<Codec> make_codec(const CodecSpec& spec, const Layout& layout);
inline std::unique_ptr<Codec> make_codec(std::string_view spec, const Layout& layout) {
  return make_codec(CodecSpec::parse(spec), layout);
}

}  // namespace gcomp
