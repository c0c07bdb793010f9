// SPDX-License-Identifier: Apache-2.0
// Wire format v1: framing round trip, every kind of malformed frame, and golden payload files.
#include "common/test_util.hpp"

#include <gcomp/wire.hpp>

#include "tools/support/report.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>

using namespace gcomp;

namespace {

std::vector<uint8_t> framed_example(const char* spec, const Layout& layout, const RngKey& key) {
  auto c = make_codec(spec, layout);
  const auto x = test::gaussian(layout.num_elems(), 17);
  return frame_payload(*c, key, test::encode(*c, x, key));
}

gcompStatus_t status_of(const std::vector<uint8_t>& bytes, std::string* msg = nullptr) {
  try {
    (void)parse_frame(bytes);
  } catch (const Error& e) {
    if (msg) *msg = e.what();
    return e.status();
  }
  return gcompSuccess;
}

}  // namespace

namespace {

/// Recomputes the header checksum (bytes 76..79) after a test patched the header.
void refresh_header_crc(std::vector<uint8_t>& f) {
  uint32_t header = 0;
  std::memcpy(&header, f.data() + 8, 4);
  std::memset(f.data() + 76, 0, 4);
  const uint32_t c = crc32(std::span<const uint8_t>(f.data(), header));
  std::memcpy(f.data() + 76, &c, 4);
}

}  // namespace

// Issue 18 #16: the spec text of a header is untrusted. A message quoting it escapes control
// characters (no terminal escape sequences reach stderr) and a NUL does not cut it short.
TEST(WireTest, HeaderTextIsEscapedInMessages) {
  auto f = framed_example("topk:k=3", Layout(int64_t{64}), RngKey{1, 0, 0, 0});
  uint32_t spec_len = 0;
  std::memcpy(&spec_len, f.data() + 60, 4);
  ASSERT_EQ(spec_len, 8u);  // "topk:k=3"
  const char evil[8] = {'\x1b', '[', '3', '1', 'm', '\0', 'z', 'q'};
  std::memcpy(f.data() + 80, evil, 8);
  refresh_header_crc(f);
  std::string msg;
  ASSERT_EQ(status_of(f, &msg), gcompErrorCorruptPayload);
  EXPECT_EQ(msg.find('\x1b'), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\0'), std::string::npos);
  EXPECT_NE(msg.find("\\x1b[31m\\x00zq"), std::string::npos) << msg;
  EXPECT_EQ(std::strlen(msg.c_str()), msg.size()) << "a NUL would truncate the printed message";
}

// Issue 18 #16: the stream offset of a frame is 0 (uplink) or 8 (downlink), nothing else.
TEST(WireTest, StreamOffsetIsZeroOrEight) {
  for (uint32_t off : {0u, 8u, 7u, 16u, 0xffffffffu}) {
    auto f = framed_example("sign:block=8", Layout(int64_t{40}), RngKey{5, 1, 2, 0});
    std::memcpy(f.data() + 56, &off, 4);
    refresh_header_crc(f);
    std::string msg;
    const gcompStatus_t st = status_of(f, &msg);
    if (off == 0 || off == 8) {
      EXPECT_EQ(st, gcompSuccess) << off << ": " << msg;
    } else {
      EXPECT_EQ(st, gcompErrorCorruptPayload) << off;
      EXPECT_NE(msg.find("stream offset " + std::to_string(off)), std::string::npos) << msg;
    }
  }
  auto c = make_codec("sign", Layout(int64_t{8}));
  const std::vector<uint8_t> body(c->encoded_bytes(), 0);
  EXPECT_THROW((void)frame_payload(*c, RngKey{0, 0, 0, 7}, body), Error);
}

TEST(WireTest, FrameRoundTrip) {
  const Layout layout(std::vector<int64_t>{10, 0, 77});
  const RngKey key{0xfeedfacecafebeefull, 3, 12, 0};
  auto c = make_codec("dither:levels=4,norm=linf,block=16", layout);
  const auto x = test::gaussian(87, 2);
  const auto body = test::encode(*c, x, key);
  const auto framed = frame_payload(*c, key, body);
  const FrameInfo info = parse_frame(framed);
  EXPECT_EQ(info.spec, c->spec());
  EXPECT_EQ(info.layout, layout);
  EXPECT_EQ(info.key.seed, key.seed);
  EXPECT_EQ(info.key.rank, 3u);
  EXPECT_EQ(info.key.step, 12u);
  EXPECT_EQ(info.header_bytes % 8, 0u);
  const auto view = frame_body(framed, info);
  EXPECT_TRUE(test::bytes_equal(std::vector<uint8_t>(view.begin(), view.end()), body));
  const std::string json = frame_info_json(info);
  EXPECT_NE(json.find("\"codec\": \"dither\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"params\": {\"levels\": \"4\", \"norm\": \"linf\", \"block\": \"16\"}"), std::string::npos)
      << json;
  EXPECT_NE(json.find("\"n\": 87"), std::string::npos);
  EXPECT_NE(json.find("\"segments\": [10, 0, 77]"), std::string::npos);
  EXPECT_NE(json.find("\"seed\": 18369614221190020847"), std::string::npos);
}

TEST(WireTest, EverySingleByteCorruptionIsDetected) {
  for (const char* spec : {"sign:block=8", "topk:k=4", "natural", "randk:k=5", "topk:k=4,index=rice"}) {
    const auto good = framed_example(spec, Layout(std::vector<int64_t>{20, 13}), RngKey{1, 0, 0, 0});
    ASSERT_EQ(status_of(good), gcompSuccess);
    for (size_t i = 0; i < good.size(); ++i) {
      for (uint8_t flip : {uint8_t{0x01}, uint8_t{0x80}}) {
        auto bad = good;
        bad[i] ^= flip;
        EXPECT_EQ(status_of(bad), gcompErrorCorruptPayload) << spec << ": byte " << i;
      }
    }
  }
}

TEST(WireTest, TruncationTrailingBytesMagicAndVersion) {
  const auto good = framed_example("dither:levels=2", Layout(100), RngKey{});
  std::string msg;
  for (size_t cut : {size_t{0}, size_t{10}, size_t{79}, size_t{100}, good.size() - 1}) {
    std::vector<uint8_t> t(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_EQ(status_of(t, &msg), gcompErrorCorruptPayload) << cut;
    EXPECT_NE(msg.find("truncated"), std::string::npos) << cut << ": " << msg;
  }
  auto longer = good;
  longer.push_back(0);
  EXPECT_EQ(status_of(longer, &msg), gcompErrorCorruptPayload);
  EXPECT_NE(msg.find("1 trailing bytes"), std::string::npos) << msg;
  auto magic = good;
  magic[0] = 'X';
  EXPECT_EQ(status_of(magic, &msg), gcompErrorCorruptPayload);
  EXPECT_NE(msg.find("wrong magic"), std::string::npos) << msg;
  auto version = good;
  version[4] = 2;
  EXPECT_EQ(status_of(version, &msg), gcompErrorCorruptPayload);
  EXPECT_NE(msg.find("format version 2 is not supported"), std::string::npos) << msg;
}

TEST(WireTest, ConsistentButInvalidContentIsRejected) {
  // A frame whose checksums are right but whose body breaks codec rules (a level above s):
  // built by hand through frame_payload, which does not validate content.
  auto c = make_codec("dither:levels=2", Layout(32));
  std::vector<uint8_t> body(c->encoded_bytes(), 0);
  const float scale = 1.0f;
  std::memcpy(body.data(), &scale, 4);
  const uint32_t ones = 1;  // element 0: level bit0 and bit1 set = level 3 > s = 2
  std::memcpy(body.data() + 8, &ones, 4);
  std::memcpy(body.data() + 12, &ones, 4);
  std::string msg;
  EXPECT_EQ(status_of(frame_payload(*c, RngKey{}, body), &msg), gcompErrorCorruptPayload);
  EXPECT_NE(msg.find("level above 2"), std::string::npos) << msg;
  auto t = make_codec("topk:k=2", Layout(8));
  std::vector<uint8_t> tb(t->encoded_bytes(), 0);  // indices 0, 0: not strictly increasing
  EXPECT_EQ(status_of(frame_payload(*t, RngKey{}, tb), &msg), gcompErrorCorruptPayload);
  EXPECT_NE(msg.find("strictly increasing"), std::string::npos) << msg;
}

namespace {

/// The frame `framed` (header of `header` bytes) with its body replaced by `body`: body_bytes, the
/// body CRC and the header CRC rewritten, so only the codec's own rules can reject it.
std::vector<uint8_t> reframe(const std::vector<uint8_t>& framed, size_t header, const std::vector<uint8_t>& body) {
  std::vector<uint8_t> out(framed.begin(), framed.begin() + static_cast<std::ptrdiff_t>(header));
  const uint64_t n = body.size();
  std::memcpy(out.data() + 64, &n, 8);
  const uint32_t bcrc = crc32(body);
  std::memcpy(out.data() + 72, &bcrc, 4);
  std::memset(out.data() + 76, 0, 4);
  const uint32_t hcrc = crc32(out);
  std::memcpy(out.data() + 76, &hcrc, 4);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

}  // namespace

TEST(WireTest, ShortBodiesOfVariableLengthCodecs) {
  // docs/wire-format.md §6: a frame holds the full payload or exactly the used bytes.
  const Layout layout(std::vector<int64_t>{300, 41});
  const RngKey key{99, 2, 7, 0};
  auto x = test::gaussian(layout.num_elems(), 5);
  // The largest magnitudes in one run: top-k gaps of 1, an index stream well below its worst case.
  for (size_t i = 20; i < 120; ++i) x[i] += x[i] < 0 ? -50.0f : 50.0f;
  for (const char* spec :
       {"sdither:levels=2,chunk=16", "sdither:code=delta", "topk:k=60,index=rice", "topk:ratio=0.2,index=rice"}) {
    auto c = make_codec(spec, layout);
    const auto full = test::encode(*c, x, key);
    const size_t used = c->used_bytes(full);
    ASSERT_LT(used + 4, full.size()) << spec << ": the test needs a message two words below the worst case";
    const std::vector<uint8_t> body(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(used));
    const auto framed = frame_payload(*c, key, body);
    const FrameInfo info = parse_frame(framed);
    EXPECT_EQ(info.body_bytes, used) << spec;
    EXPECT_EQ(info.used_bytes, used) << spec;
    EXPECT_EQ(info.worst_bytes, full.size()) << spec;
    EXPECT_EQ(framed.size(), info.header_bytes + used) << spec;
    const std::string json = frame_info_json(info);
    EXPECT_NE(json.find("\"used_bytes\": " + std::to_string(used)), std::string::npos) << json;
    EXPECT_NE(json.find("\"worst_case_bytes\": " + std::to_string(full.size())), std::string::npos) << json;
    const auto in_frame = frame_body(framed, info);
    EXPECT_TRUE(test::bitwise_equal(test::decode(*c, std::vector<uint8_t>(in_frame.begin(), in_frame.end()), key),
                                    test::decode(*c, full, key)))
        << spec;
    // The full form still frames and parses (every frame written before short bodies existed).
    EXPECT_EQ(parse_frame(frame_payload(*c, key, full)).body_bytes, full.size()) << spec;
    // frame_payload takes the full or the used size only.
    auto plus4 = body;
    plus4.insert(plus4.end(), 4, uint8_t{0});
    EXPECT_THROW((void)frame_payload(*c, key, plus4), Error) << spec;
    std::string msg;
    // Consistent checksums, but a body the length field does not account for, or one it needs
    // more of, or a length field raised after the fact.
    EXPECT_EQ(status_of(reframe(framed, info.header_bytes, plus4), &msg), gcompErrorCorruptPayload) << spec;
    EXPECT_NE(msg.find("its length field says"), std::string::npos) << msg;
    const std::vector<uint8_t> cut(body.begin(), body.end() - 4);
    EXPECT_EQ(status_of(reframe(framed, info.header_bytes, cut), &msg), gcompErrorCorruptPayload) << spec;
    auto lying = body;
    const size_t t_at = c->length_prefix_bytes() - 4;
    uint32_t t = 0;
    std::memcpy(&t, lying.data() + t_at, 4);
    t += 32;
    std::memcpy(lying.data() + t_at, &t, 4);
    EXPECT_EQ(status_of(reframe(framed, info.header_bytes, lying), &msg), gcompErrorCorruptPayload) << spec;
    EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
    const std::vector<uint8_t> prefix_only(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(t_at + 2));
    EXPECT_EQ(status_of(reframe(framed, info.header_bytes, prefix_only), &msg), gcompErrorCorruptPayload) << spec;
    // Every single-bit flip of the short frame is caught.
    for (size_t i = 0; i < framed.size(); ++i) {
      auto bad = framed;
      bad[i] ^= 0x10;
      EXPECT_EQ(status_of(bad), gcompErrorCorruptPayload) << spec << ": byte " << i;
    }
  }
  // A fixed-size codec takes only its full size.
  auto d = make_codec("dither", layout);
  const auto p = test::encode(*d, x, key);
  EXPECT_THROW((void)frame_payload(*d, key, std::span<const uint8_t>(p).first(p.size() - 4)), Error);
}

// ------------------------------------------------------------------------------------- golden
// tests/data/golden/<name>.gcp pins the bytes of wire format v1 for every codec, and <name>.f32
// the decoded values. Regenerating them is deliberate: GCOMP_REGEN_GOLDEN=1 (see the README there).

namespace {

struct GoldenCase {
  const char* name;
  const char* spec;
  bool used_only = false;  ///< frame the used bytes only (a short body, docs/wire-format.md §6)
};

const GoldenCase kGolden[] = {
    {"identity", "identity"},
    {"dither_l2_s1", "dither"},
    {"dither_l2_s4_b16", "dither:levels=4,norm=l2,block=16"},
    {"dither_linf_s1_b33", "dither:levels=1,norm=linf,block=33"},
    {"dither_lp3_s3_b31", "dither:levels=3,norm=lp,p=3,block=31"},
    {"terngrad", "terngrad"},
    {"terngrad_clip", "terngrad:clip=2.5"},
    {"sign_b32", "sign:block=32"},
    {"sign_none", "sign:scale=none"},
    {"topk_k9", "topk:k=9"},
    {"randk_r025", "randk:ratio=0.25"},
    {"natural", "natural"},
    {"natdither_s3", "natdither:levels=3,norm=l2,block=32"},
    {"grid_b12", "grid:step=0.125,bits=12"},
    {"sdither_l2_s1", "sdither"},
    {"sdither_linf_s4_delta", "sdither:levels=4,norm=linf,block=33,code=delta,chunk=64"},
    {"spherical_b8_B6", "spherical:block=8,bits=6"},
    {"spherical_b5_B3_unscaled", "spherical:block=5,bits=3,unscaled=1"},
    {"topk_k9_rice", "topk:k=9,index=rice"},
    {"topk_k20_rice_short", "topk:k=20,index=rice", true},
    {"sdither_l2_s1_short", "sdither", true},
    {"sdither_linf_s4_delta_short", "sdither:levels=4,norm=linf,block=33,code=delta,chunk=64", true},
};

std::vector<float> golden_input(int64_t n) {
  // Fixed, platform-independent values: exact binary fractions from an integer recurrence.
  std::vector<float> x(static_cast<size_t>(n));
  uint32_t s = 12345;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 1103515245u + 12345u;
    const int32_t v = static_cast<int32_t>((s >> 8) & 0xffff) - 32768;
    x[i] = (i % 9 == 4) ? 0.0f : static_cast<float>(v) / 4096.0f;
  }
  return x;
}

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void spit(const std::string& path, const void* data, size_t bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
}

}  // namespace

TEST(GoldenTest, PayloadsMatchCheckedInFiles) {
  const Layout layout(std::vector<int64_t>{70, 1, 129});
  const RngKey key{20261124, 1, 3, 0};
  const auto x = golden_input(layout.num_elems());
  const bool regen = std::getenv("GCOMP_REGEN_GOLDEN") != nullptr;
  const std::string dir = std::string(GCOMP_TEST_DATA_DIR) + "/golden/";
  for (const GoldenCase& g : kGolden) {
    auto c = make_codec(g.spec, layout);
    const auto body = test::encode(*c, x, key);
    const size_t body_bytes = g.used_only ? c->used_bytes(body) : body.size();
    if (g.used_only) {
      EXPECT_LT(body_bytes, body.size()) << g.name << ": the short form must be shorter";
    }
    const auto framed = frame_payload(*c, key, std::span<const uint8_t>(body).first(body_bytes));
    std::vector<float> y(x.size());
    const FrameInfo info = parse_frame(framed);
    c->decode(frame_body(framed, info), info.key, y);
    if (regen) {
      spit(dir + g.name + ".gcp", framed.data(), framed.size());
      spit(dir + g.name + ".f32", y.data(), y.size() * 4);
      continue;
    }
    const auto want = slurp(dir + g.name + ".gcp");
    ASSERT_FALSE(want.empty()) << "missing golden file " << dir << g.name << ".gcp";
    EXPECT_TRUE(test::bytes_equal(framed, want)) << g.name;
    const auto want_y = slurp(dir + g.name + ".f32");
    std::vector<uint8_t> got_y(y.size() * 4);
    std::memcpy(got_y.data(), y.data(), got_y.size());
    EXPECT_TRUE(test::bytes_equal(got_y, want_y)) << g.name << " decode";
    // The checked-in file decodes on its own to the checked-in values.
    const FrameInfo fi = parse_frame(want);
    std::vector<float> z(x.size());
    make_codec(fi.spec, fi.layout)->decode(frame_body(want, fi), fi.key, z);
    EXPECT_TRUE(test::bitwise_equal(z, y)) << g.name;
  }
  if (regen) GTEST_SKIP() << "golden files regenerated in " << dir;
}

TEST(GoldenTest, CorruptGoldenFilesAreRejected) {
  const std::string dir = std::string(GCOMP_TEST_DATA_DIR) + "/golden/";
  for (const char* name : {"corrupt_body_crc.gcp", "corrupt_truncated.gcp", "corrupt_version.gcp"}) {
    const auto bytes = slurp(dir + name);
    ASSERT_FALSE(bytes.empty()) << name;
    EXPECT_EQ(status_of(bytes), gcompErrorCorruptPayload) << name;
  }
}
