# SPDX-License-Identifier: Apache-2.0
"""gcomp.Codec: sizes, round trips, byte equality with gcomp-codec and the golden files, errors."""
import pathlib
import re
import subprocess

import numpy as np
import pytest

import gcomp

SPECS = ["identity", "dither:levels=4,norm=linf,block=256", "dither:levels=1,norm=l2", "terngrad",
         "sign:block=32", "topk:k=50", "randk:k=40", "natural", "natdither:levels=3,norm=l2,block=32"]

# tests/unit/test_wire.cpp: golden file name -> spec; layout (70, 1, 129), seed 20261124, rank 1, step 3.
GOLDEN = {"identity": "identity", "dither_l2_s1": "dither", "dither_l2_s4_b16": "dither:levels=4,norm=l2,block=16",
          "dither_linf_s1_b33": "dither:levels=1,norm=linf,block=33", "terngrad": "terngrad",
          "sign_b32": "sign:block=32", "topk_k9": "topk:k=9", "randk_r025": "randk:ratio=0.25",
          "natural": "natural", "natdither_s3": "natdither:levels=3,norm=l2,block=32"}


def sample(n, seed=7):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def test_extension_loads_and_version_matches_the_header():
    header = (pathlib.Path(__file__).resolve().parents[2] / "include" / "gcomp" / "gcomp.h").read_text()
    major, minor, patch = (int(re.search(rf"#define GCOMP_VERSION_{k} (\d+)", header).group(1))
                           for k in ("MAJOR", "MINOR", "PATCH"))
    assert gcomp.abi_version() == major * 10000 + minor * 100 + patch
    assert pathlib.Path(gcomp.library_path()).name.startswith("_core")
    assert gcomp.status_string(gcomp.Status.CORRUPT_PAYLOAD) == "corrupt payload"
    assert {c["name"] for c in gcomp.list_codecs()} >= {"identity", "dither", "sign", "topk"}
    for c in gcomp.list_codecs():  # each codec's example specs (gcomp-bench bits runs them) build it
        assert c["examples"], c["name"]
        for spec in c["examples"]:
            assert gcomp.Codec(spec, 64).canonical_spec.split(":")[0] == c["name"], spec


@pytest.mark.parametrize("spec", SPECS)
def test_round_trip_sizes_and_determinism(spec):
    codec = gcomp.Codec(spec, [300, 1, 211], seed=11)
    assert codec.num_elems == 512
    x = sample(512)
    p1 = codec.encode(x, rank=2, step=5)
    p2 = codec.encode(x.astype(np.float64), rank=2, step=5)
    assert p1.dtype == np.uint8 and p1.size == codec.encoded_bytes
    assert np.array_equal(p1, p2)
    assert codec.encoded_bits <= 8 * codec.encoded_bytes
    y = codec.decode(p1, rank=2, step=5)
    assert y.dtype == np.float32 and y.shape == (512,)
    acc = np.ones(512, dtype=np.float32)
    codec.decode_accumulate(p1, acc, weight=0.5, rank=2, step=5)
    np.testing.assert_allclose(acc, 1.0 + 0.5 * y, rtol=1e-6, atol=1e-6)
    if spec == "identity":
        assert np.array_equal(y, x)
    payload, rank, step = codec.parse_frame(codec.frame(p1, rank=2, step=5))
    assert (rank, step) == (2, 5) and np.array_equal(payload, p1)


def test_guarantees():
    assert gcomp.Codec("identity", 10).guarantee.kind in ("none", "unbiased")
    g = gcomp.Codec("dither:levels=1,norm=linf,block=256", 1024).guarantee
    assert g.kind == "unbiased" and g.omega > 0
    s = gcomp.Codec("sign:block=32", 1024).guarantee
    assert s.kind == "contractive" and s.delta == pytest.approx(1 / 32)


def test_seed_override_equals_codec_with_that_seed():
    x = sample(100)
    a = gcomp.Codec("randk:k=10", 100, seed=1).encode(x, seed=99, rank=1, step=2)
    b = gcomp.Codec("randk:k=10", 100, seed=99).encode(x, rank=1, step=2)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("spec", ["dither:levels=4,norm=linf,block=16", "sign:block=32", "randk:k=7", "natural"])
def test_equal_to_gcomp_codec_cli(spec, codec_cli, tmp_path):
    segments = [40, 3, 57]
    x = sample(100, seed=3)
    (tmp_path / "x.f32").write_bytes(x.astype("<f4").tobytes())
    subprocess.run([codec_cli, "encode", "--codec", spec, "--in", str(tmp_path / "x.f32"), "--out",
                    str(tmp_path / "p.gcp"), "--seed", "77", "--rank", "3", "--step", "9", "--segments",
                    ",".join(map(str, segments))], check=True, capture_output=True, timeout=60)
    subprocess.run([codec_cli, "decode", "--in", str(tmp_path / "p.gcp"), "--out", str(tmp_path / "y.f32")],
                   check=True, capture_output=True, timeout=60)
    framed = (tmp_path / "p.gcp").read_bytes()
    codec = gcomp.Codec(spec, segments, seed=77)
    payload = codec.encode(x, rank=3, step=9)
    assert codec.frame(payload, rank=3, step=9).tobytes() == framed
    parsed, rank, step = codec.parse_frame(framed)
    assert (rank, step) == (3, 9) and np.array_equal(parsed, payload)
    cli_out = np.frombuffer((tmp_path / "y.f32").read_bytes(), dtype="<f4")
    assert np.array_equal(codec.decode(payload, rank=3, step=9), cli_out)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_files_decode(name, golden_dir):
    codec = gcomp.Codec(GOLDEN[name], [70, 1, 129], seed=20261124)
    payload, rank, step = codec.parse_frame((golden_dir / f"{name}.gcp").read_bytes())
    assert (rank, step) == (1, 3)
    want = np.frombuffer((golden_dir / f"{name}.f32").read_bytes(), dtype="<f4")
    assert np.array_equal(codec.decode(payload, rank=rank, step=step), want)
    assert codec.frame(payload, rank=rank, step=step).tobytes() == (golden_dir / f"{name}.gcp").read_bytes()


def test_errors_carry_status_and_text(golden_dir):
    with pytest.raises(gcomp.Error) as e:
        gcomp.Codec("dither:levls=4", 10)
    assert e.value.status == gcomp.Status.INVALID_ARGUMENT and "levls" in e.value.message
    codec = gcomp.Codec("sign:block=32", [70, 1, 129], seed=20261124)
    with pytest.raises(gcomp.Error) as e:
        codec.parse_frame((golden_dir / "corrupt_body_crc.gcp").read_bytes())
    assert e.value.status == gcomp.Status.CORRUPT_PAYLOAD and e.value.message
    x = sample(200)
    x[17] = np.nan
    with pytest.raises(gcomp.Error) as e:
        codec.encode(x)
    assert e.value.status == gcomp.Status.NON_FINITE
    p = codec.encode(sample(200))
    with pytest.raises(gcomp.Error) as e:
        codec.decode(p[:-4])
    assert e.value.status == gcomp.Status.CORRUPT_PAYLOAD
    with pytest.raises(gcomp.Error) as e:
        codec.encode(sample(199))
    assert e.value.status == gcomp.Status.INVALID_ARGUMENT and "200" in e.value.message
    out = np.zeros(200, dtype=np.float32)
    out.flags.writeable = False
    with pytest.raises(gcomp.Error):
        codec.decode_accumulate(p, out)


def test_outputs_in_place_and_converted():
    codec = gcomp.Codec("dither:levels=2,norm=l2", 64, seed=5)
    x = sample(64)
    p = codec.encode(x)
    out = np.empty(64, dtype=np.float32)
    assert codec.decode(p, out=out) is out
    out64 = np.empty((8, 8), dtype=np.float64)
    codec.decode(p, out=out64)
    assert np.array_equal(out64.reshape(-1), out.astype(np.float64))
    acc64 = np.zeros(64)
    codec.decode_accumulate(p, acc64, weight=2.0)
    np.testing.assert_allclose(acc64, 2.0 * out, rtol=1e-6)
