from __future__ import annotations

import struct
from pathlib import Path

import pytest

from edge.calib.cache import (
    ALGORITHM_NAMES,
    CalibrationCache,
    cache_summary,
    check_cache_matches,
    format_cache,
    parse_cache,
    read_cache,
    read_cache_sidecar,
    sidecar_path,
    write_cache,
    write_cache_sidecar,
)
from edge.core.errors import CalibrationError
from edge.core.trt_version import TrtVersion

# Lines from real caches (research anchors §1.3).
MNIST_TRT7 = "TRT-7000-EntropyCalibration2\ndata: 3c008912\nprob: 3c010a14\n"
YOLO_TRT85 = (
    "TRT-8502-EntropyCalibration2\r\n"
    "input: 3c010a16\r\n"
    "/0/model.0/conv/Conv_output_0: 3e6e18b7\r\n"
    "/0/model.0/act/Sigmoid_output_0: 3c010a14\r\n"
    "(Unnamed Layer* 64) [Shuffle]_output: 3c010a14"  # no final newline
)
DEIM_TRT109 = "TRT-100900-EntropyCalibration2\nimages: 3c021406\nONNXTRT_Broadcast_1855_output: 0\n"
VGG_MINMAX = (
    "TRT-8400-MinMaxCalibration\ninput_0: 3cb1a063\n(Unnamed Layer* 46) [Constant]_output: "
    "398b1d4b\n"
)


def test_real_trt7_cache() -> None:
    c = parse_cache(MNIST_TRT7)
    assert c.version == TrtVersion(7, 0, 0) and c.algorithm == "EntropyCalibration2"
    assert c.scales["data"] == pytest.approx(0.007845, abs=1e-6)
    assert c.amax("data") == pytest.approx(0.996, abs=1e-3)
    assert c.amax("prob") == pytest.approx(1.0002, abs=1e-4)


def test_real_trt85_cache_crlf_internal_names() -> None:
    c = parse_cache(YOLO_TRT85)
    assert c.version == TrtVersion(8, 5, 2) and c.header == "TRT-8502-EntropyCalibration2"
    assert c.amax("/0/model.0/conv/Conv_output_0") == pytest.approx(29.53, abs=0.01)
    assert c.amax("(Unnamed Layer* 64) [Shuffle]_output") == pytest.approx(1.0002, abs=1e-4)
    assert list(c.scales) == [
        "input",
        "/0/model.0/conv/Conv_output_0",
        "/0/model.0/act/Sigmoid_output_0",
        "(Unnamed Layer* 64) [Shuffle]_output",
    ]


def test_real_trt10_cache_unpadded_zero_and_minmax() -> None:
    c = parse_cache(DEIM_TRT109)
    assert c.version == TrtVersion(10, 9, 0)
    assert c.amax("images") == pytest.approx(1.008, abs=1e-3)
    assert c.scales["ONNXTRT_Broadcast_1855_output"] == 0.0
    m = parse_cache(VGG_MINMAX)
    assert m.algorithm == "MinMaxCalibration" and m.version == TrtVersion(8, 4, 0)
    assert m.amax("input_0") == pytest.approx(2.754, abs=1e-3)


def test_names_with_colon_space_split_on_last() -> None:
    c = parse_cache("TRT-8601-EntropyCalibration2\nweird: name: 3c010a14\nshort: 3c\n")
    assert c.amax("weird: name") == pytest.approx(1.0002, abs=1e-4)
    assert c.scales["short"] == struct.unpack(">f", bytes.fromhex("0000003c"))[0]


def test_legacy_algorithm_names_are_read() -> None:
    for algo in ("EntropyCalibration", "LegacyCalibration"):
        assert parse_cache(f"TRT-8601-{algo}\nx: 3c010a14\n").algorithm == algo


def test_write_read_round_trip_bit_exact(tmp_path: Path) -> None:
    scales = {"input": 1 / 127, "(Unnamed Layer* 3) [Shuffle]_output": 0.1, "zero": 0.0, "b": 3.3}
    cache = CalibrationCache(TrtVersion.parse("10.3.0"), "EntropyCalibration2", scales)
    path = write_cache(tmp_path / "sub" / "trunk.cache", cache)
    text = path.read_text()
    assert text.startswith("TRT-100300-EntropyCalibration2\ninput: 3c010204\n")
    assert "zero: 00000000\n" in text and text.endswith("\n")
    back = read_cache(path)
    assert back == cache and list(back.scales) == list(scales)
    for name, s in back.scales.items():
        assert struct.pack(">f", s) == struct.pack(">f", scales[name])
    assert format_cache(parse_cache(format_cache(back))) == text
    assert [p.name for p in path.parent.iterdir()] == ["trunk.cache"]  # no temporary left
    assert path.stat().st_mode & 0o777 == 0o644


def test_real_cache_rewritten_identically() -> None:
    text = YOLO_TRT85.replace("\r\n", "\n") + "\n"
    assert format_cache(parse_cache(text)) == text


def test_from_amaxes_and_algorithm_names() -> None:
    c = CalibrationCache.from_amaxes(TrtVersion(8, 6, 1), "minmax", {"a": 2.0, "b": 0.0})
    assert c.header == "TRT-8601-MinMaxCalibration"
    assert c.amax("a") == pytest.approx(2.0, rel=1e-7)
    assert c.scales["b"] > 0  # a zero amax still gets a usable positive scale
    assert ALGORITHM_NAMES["entropy"] == "EntropyCalibration2"
    assert ALGORITHM_NAMES["percentile"] in ("EntropyCalibration2", "MinMaxCalibration")
    with pytest.raises(CalibrationError, match="has no tensor 'missing'"):
        c.amax("missing")
    with pytest.raises(CalibrationError, match="algorithm"):
        CalibrationCache(TrtVersion(8, 6, 1), "entropy", {})
    with pytest.raises(CalibrationError, match="beyond float32"):
        CalibrationCache(TrtVersion(8, 6, 1), "MinMaxCalibration", {"a": 1e39})
    with pytest.raises(CalibrationError, match="non-negative"):
        CalibrationCache(TrtVersion(8, 6, 1), "MinMaxCalibration", {"a": -0.0})
    # a nonstandard TRT 7 hand-written header still round-trips
    assert parse_cache("TRT-7134-EntropyCalibration2\nx: 0\n").header == (
        "TRT-7134-EntropyCalibration2"
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("TRT8502-EntropyCalibration2\nx: 3c\n", r":1: bad header"),
        ("TRT-8502-FancyCalibration\nx: 3c\n", r":1: unknown calibration algorithm"),
        ("TRT-8502-EntropyCalibration2\nx: 3c\nno separator here\n", r":3: .*not a"),
        ("TRT-8502-EntropyCalibration2\nx: 0x3c\n", r":2: .*hex digits"),
        ("TRT-8502-EntropyCalibration2\nx: 3c010a14ff\n", r":2: .*hex digits"),
        ("TRT-8502-EntropyCalibration2\nx: 3c\nx: 3d\n", r":3: tensor 'x' appears twice"),
        ("TRT-8502-EntropyCalibration2\nx: 7fc00000\n", r":2: .*scale nan"),
        ("TRT-8502-EntropyCalibration2\nx: ff800000\n", r":2: .*scale -inf"),
        ("TRT-8502-EntropyCalibration2\nx: bc010a14\n", r":2: .*non-negative"),
    ],
)
def test_parse_errors_name_file_and_line(text: str, match: str) -> None:
    with pytest.raises(CalibrationError, match=match) as e:
        parse_cache(text, source="heads/seg.cache")
    assert "heads/seg.cache" in str(e.value)


def test_read_missing_and_binary(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="edge calibrate"):
        read_cache(tmp_path / "none.cache")
    p = tmp_path / "bin.cache"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CalibrationError, match="not a text file"):
        read_cache(p)


def test_check_cache_matches() -> None:
    c = parse_cache(YOLO_TRT85)
    graph = {"input", "/0/model.0/conv/Conv_output_0", "/0/model.0/act/Sigmoid_output_0"}
    target = TrtVersion(8, 5, 2)
    check_cache_matches(c, expected_tensors=graph, target=target, algorithm="entropy", source="s")
    check_cache_matches(c, expected_tensors=graph, source="s")  # internal names are ignored
    with pytest.raises(CalibrationError) as e:
        check_cache_matches(
            c,
            expected_tensors=(graph - {"input"}) | {f"new{i}" for i in range(7)},
            target=TrtVersion(10, 3, 0),
            algorithm="minmax",
            source="bundle/calib/trunk.cache",
        )
    msg = str(e.value)
    assert "bundle/calib/trunk.cache" in msg and "edge calibrate" in msg
    assert "7 graph tensor(s) have no scale" in msg and "and 2 more" in msg
    assert "not in the graph: 'input'" in msg and "Unnamed" not in msg
    assert "TensorRT 8.5.2" in msg and "10.3.0" in msg
    assert "MinMaxCalibration" in msg


def test_sidecar_round_trip_and_errors(tmp_path: Path) -> None:
    cache_path = tmp_path / "trunk.cache"
    meta = {"onnx_sha256": "ab" * 32, "algorithm": "entropy", "frames": 500, "seed": 0}
    p = write_cache_sidecar(cache_path, meta)
    assert p == sidecar_path(cache_path) == tmp_path / "trunk.cache.json"
    assert read_cache_sidecar(cache_path) == meta
    with pytest.raises(CalibrationError, match="missing"):
        read_cache_sidecar(tmp_path / "other.cache")
    p.write_text("[1, 2]")
    with pytest.raises(CalibrationError, match="JSON object"):
        read_cache_sidecar(cache_path)
    p.write_text("{not json")
    with pytest.raises(CalibrationError, match="unreadable"):
        read_cache_sidecar(cache_path)
    with pytest.raises(CalibrationError, match="JSON"):
        write_cache_sidecar(cache_path, {"x": float("nan")})
    assert sorted(q.name for q in tmp_path.iterdir()) == ["trunk.cache.json"]


# Written here in the shapes of TensorRT 10.x caches: a MinMax cache with +inf for a Log output,
# unpadded hex, the parser's own names (ONNXTRT_*), names derived from ONNX tensors and nodes
# (``<tensor>_output``, the pre-bias MatMul of a Gemm node, a duplicate's ``_1``), constants
# (an initializer) and a broadcast of one.
TRT10_GRAPH = {
    "images",
    "/m/Conv_output_0",
    "/m/Log_output_0",
    "/m/fc/Gemm",
    "logits",
    "fc.weight",
    "fc.bias",
}
TRT10_MINMAX = (
    "TRT-101300-MinMaxCalibration\n"
    "images: 3c010204\n"
    "/m/Conv_output_0: 3d8d4fdf\n"
    "/m/Log_output_0: 7f800000\n"
    "/m/Conv_output_0_output: 3d8d4fdf\n"
    "/m/fc/Gemm_output: 3e0f5c29\n"
    "/m/fc/Gemm_output_1: 3e0f5c29\n"
    "fc.weight: 3b1a2b3c\n"
    "fc.bias_output: 3a000000\n"
    "ONNXTRT_Broadcast_12_output: 0\n"
    "ONNXTRT_ShapeTensorFromDims_3: 0\n"
    "logits: 3e800000\n"
)


def test_trt10_cache_with_inf_round_trips_byte_for_byte(tmp_path: Path) -> None:
    c = parse_cache(TRT10_MINMAX, source="trt10.cache")
    assert c.infinite_tensors() == ["/m/Log_output_0"]
    assert c.amax("/m/Log_output_0") == float("inf")
    assert format_cache(c) == TRT10_MINMAX  # unpadded "0" and +inf kept as written
    path = write_cache(tmp_path / "again.cache", c)
    assert path.read_bytes() == TRT10_MINMAX.encode()
    assert read_cache(path) == c


def test_trt10_names_are_not_reported_as_foreign() -> None:
    c = parse_cache(TRT10_MINMAX)
    expected = {"images", "/m/Conv_output_0", "/m/Log_output_0", "logits"}
    check_cache_matches(
        c, expected_tensors=expected, graph_names=TRT10_GRAPH, algorithm="minmax", source="s"
    )
    summary = cache_summary(c, TRT10_GRAPH)
    assert summary["infinite"] == ["/m/Log_output_0"]
    assert summary["derived"] == {
        "/m/Conv_output_0_output": "/m/Conv_output_0",
        "/m/fc/Gemm_output": "/m/fc/Gemm",
        "/m/fc/Gemm_output_1": "/m/fc/Gemm",
        "fc.bias_output": "fc.bias",
    }
    assert summary["internal"] == ["ONNXTRT_Broadcast_12_output", "ONNXTRT_ShapeTensorFromDims_3"]
    # a name derived from nothing in the graph is still reported
    stray = parse_cache(TRT10_MINMAX + "/other/Conv_output_0_output: 3c000000\n")
    with pytest.raises(CalibrationError, match="not in the graph: '/other/Conv_output_0_output'"):
        check_cache_matches(stray, expected_tensors=expected, graph_names=TRT10_GRAPH, source="s")


def test_computed_scales_keep_eight_digits_after_a_read() -> None:
    c = parse_cache("TRT-100300-EntropyCalibration2\na: 0\n")
    changed = CalibrationCache(c.version, c.algorithm, {"a": 0.5}, c.hex_text)
    assert format_cache(changed) == "TRT-100300-EntropyCalibration2\na: 3f000000\n"
