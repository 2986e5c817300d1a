"""The container: the golden worked example and every MUST-reject rule of spec/container.md §6.

Each broken file is fed to the real CLI (``cli.main``), which must exit 1 with a
one-line error naming the problem and write no output file.
"""

from __future__ import annotations

import functools
import copy
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from .common import REGENERATE
from .nnz_tools import TINY_BIAS, TINY_KERNEL, assemble, assert_decompress_rejects, blobs_of, golden_tiny_bytes, rebuild, split_file
from nnzip import api, cli
from nnzip.container import crc32

assert_rejected = functools.partial(assert_decompress_rejects, inspect_too=True)  # inspect refuses what decompress does

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden-tiny.nnz"


# --- golden worked example ----------------------------------------------------------------


def test_golden_tiny_bytes_are_pinned(tmp_path):
    data = golden_tiny_bytes(tmp_path)
    if REGENERATE:
        GOLDEN.write_bytes(data)
        header, _, _ = split_file(data)
        (FIXTURES / "golden-tiny.json").write_text(json.dumps(header, indent=1) + "\n")
    assert GOLDEN.exists(), "tests/fixtures/golden-tiny.nnz is missing (python tests/regen_fixtures.py)"
    assert data == GOLDEN.read_bytes(), "the writer's bytes changed: update spec/container.md §7 and regenerate on purpose"


def test_golden_tiny_matches_spec_table():
    """The figures of spec/container.md §7, checked on the committed file."""
    data = GOLDEN.read_bytes()
    assert data[:8] == bytes.fromhex("894E4E5A0D0A1A0A")
    major, minor, flags, header_size, header_crc = struct.unpack_from("<HHIII", data, 8)
    assert (major, minor, flags) == (1, 0, 0)
    assert header_size == 1120 and data[16:20] == bytes.fromhex("60040000")
    assert header_crc == crc32(data[24:24 + header_size]) == 0xB9A89F13
    data_start = 24 + header_size + (-(24 + header_size) % 8)
    assert data_start == 1144  # 24 + 1120 is already a multiple of 8: no padding
    assert data[1144:1168] == TINY_KERNEL.tobytes() and data[1144:1148] == bytes.fromhex("0000803F")
    assert data[1168:1180] == bytes.fromhex("0000003F000000BF00000000")
    assert len(data) == 1180
    assert json.loads(data[24:24 + header_size]) == json.loads((FIXTURES / "golden-tiny.json").read_text())


def test_golden_tiny_decodes(tmp_path):
    _, tensors = api.read_tensors(GOLDEN)
    assert list(tensors) == ["layers/dense/vars/0", "layers/dense/vars/1"]
    np.testing.assert_array_equal(tensors["layers/dense/vars/0"], TINY_KERNEL)
    np.testing.assert_array_equal(tensors["layers/dense/vars/1"], TINY_BIAS)


# --- MUST-reject rules --------------------------------------------------------------------


def run_decompress(tmp_path, data: bytes, capsys) -> tuple[int, str, Path]:
    """Write *data* as bad.nnz, run ``nnzip decompress`` on it; return (status, stderr, output path)."""
    source = tmp_path / "bad.nnz"
    source.write_bytes(data)
    output = tmp_path / "out.h5"
    status = cli.main(["decompress", str(source), "-o", str(output)])
    err = capsys.readouterr().err
    return status, err, output


@pytest.fixture
def valid(tmp_path) -> bytes:
    return GOLDEN.read_bytes()


def test_valid_file_decompresses(tmp_path, valid, capsys):
    status, err, output = run_decompress(tmp_path, valid, capsys)
    assert status == 0 and output.exists(), err


def test_rule1_wrong_magic(tmp_path, valid, capsys):
    assert_rejected(tmp_path, b"PK\x03\x04" + valid[4:], capsys, "bad magic")


def test_rule1_empty_file(tmp_path, capsys):
    assert_rejected(tmp_path, b"", capsys, "bad magic")


def test_rule2_truncated_preamble(tmp_path, valid, capsys):
    assert_rejected(tmp_path, valid[:20], capsys, "truncated")


@pytest.mark.parametrize("cut", [100, 1150, 1179])
def test_rule5_11_truncated_file(tmp_path, valid, capsys, cut):
    assert_rejected(tmp_path, valid[:cut], capsys, "truncated")


def test_rule3_future_major_version(tmp_path, valid, capsys):
    assert_rejected(tmp_path, valid[:8] + struct.pack("<H", 2) + valid[10:], capsys, "unsupported format version 2.0")


def test_rule4_unknown_flags(tmp_path, valid, capsys):
    assert_rejected(tmp_path, valid[:12] + struct.pack("<I", 16) + valid[16:], capsys, "unknown flags")


def test_rule5_header_length_beyond_file(tmp_path, valid, capsys):
    assert_rejected(tmp_path, valid[:16] + struct.pack("<I", 10_000) + valid[20:], capsys, "header claims 10000 bytes")


def test_rule5_header_length_over_cap(tmp_path, valid, capsys):
    assert_rejected(tmp_path, valid[:16] + struct.pack("<I", 2**31) + valid[20:], capsys, "exceeds the cap")


def test_rule6_flipped_header_byte(tmp_path, valid, capsys):
    data = bytearray(valid)
    data[100] ^= 0x01
    assert_rejected(tmp_path, bytes(data), capsys, "header is corrupt (CRC-32 mismatch)")


def test_rule7_bad_zlib_header(tmp_path, valid, capsys):
    header, _, section = split_file(valid)
    assert_rejected(tmp_path, assemble(header, section, flags=1, header_bytes=b"not zlib at all"), capsys, "not a valid zlib stream")


def test_rule7_zlib_with_trailing_data(tmp_path, valid, capsys):
    header, _, section = split_file(valid)
    stored = zlib.compress(json.dumps(header).encode()) + b"extra"
    assert_rejected(tmp_path, assemble(header, section, flags=1, header_bytes=stored), capsys, "one complete zlib stream")


def test_rule8_header_not_json(tmp_path, valid, capsys):
    header, _, section = split_file(valid)
    assert_rejected(tmp_path, assemble(header, section, header_bytes=b"{not json"), capsys, "not valid UTF-8 JSON")


def test_rule8_header_not_object(tmp_path, valid, capsys):
    header, _, section = split_file(valid)
    assert_rejected(tmp_path, assemble(header, section, header_bytes=b"[1, 2]"), capsys, "must be a JSON object")


def test_rule8_header_nan(tmp_path, valid, capsys):
    header, _, section = split_file(valid)
    text = json.dumps(header).replace('"format": "nnzip"', '"format": "nnzip", "x": NaN').encode()
    assert_rejected(tmp_path, assemble(header, section, header_bytes=text), capsys, "NaN")


def test_rule9_nonzero_header_padding(tmp_path, valid, capsys):
    header, _, section = split_file(valid)
    stored = json.dumps(header).encode() + b" "  # still JSON; the odd length needs padding
    data = bytearray(assemble(header, section, header_bytes=stored))
    padding_start = 24 + len(stored)
    assert padding_start % 8 and not any(data[padding_start:padding_start + 1])
    data[padding_start] = 1
    assert_rejected(tmp_path, bytes(data), capsys, "non-zero padding after the header")


def _with_blob_table(valid: bytes, table: list, section: bytes | None = None) -> bytes:
    header, _, data_section = split_file(valid)
    header = {**header, "blobs": table}
    return assemble(header, data_section if section is None else section)


def test_rule10_blob_entry_malformed(tmp_path, valid, capsys):
    header, _, _ = split_file(valid)
    table = copy.deepcopy(header["blobs"])
    table[0]["size"] = -1
    assert_rejected(tmp_path, _with_blob_table(valid, table), capsys, "non-negative integers")


def test_rule11_overlapping_blobs(tmp_path, valid, capsys):
    header, _, _ = split_file(valid)
    table = copy.deepcopy(header["blobs"])
    table[1]["offset"] = 16
    assert_rejected(tmp_path, _with_blob_table(valid, table), capsys, "overlaps")


def test_rule11_hole_between_blobs(tmp_path, valid, capsys):
    header, _, section = split_file(valid)
    table = copy.deepcopy(header["blobs"])
    table[1]["offset"] = 32
    moved = section[:24] + b"\0" * 8 + section[24:]
    assert_rejected(tmp_path, _with_blob_table(valid, table, moved), capsys, "hole or misalignment")


def test_rule11_blob_out_of_range(tmp_path, valid, capsys):
    header, _, _ = split_file(valid)
    table = copy.deepcopy(header["blobs"])
    table[1]["size"] = 4000
    assert_rejected(tmp_path, _with_blob_table(valid, table), capsys, "past the end of the file")


def test_rule11_trailing_bytes(tmp_path, valid, capsys):
    assert_rejected(tmp_path, valid + b"\0" * 8, capsys, "unexpected bytes after the last blob")


def test_rule12_nonzero_padding_between_blobs(tmp_path, valid, capsys):
    header, _, section = split_file(valid)
    table = copy.deepcopy(header["blobs"])
    table[0]["size"] = 20  # blob 0 now ends at 20; bytes 20..23 become padding, and they are not zero
    table[0]["crc32"] = crc32(section[:20])
    assert_rejected(tmp_path, _with_blob_table(valid, table), capsys, "non-zero padding between blobs")


def test_rule13_flipped_blob_byte(tmp_path, valid, capsys):
    data = bytearray(valid)
    data[1146] ^= 0x40
    assert_rejected(tmp_path, bytes(data), capsys, "blob 0 is corrupt (CRC-32 mismatch)")


# --- rule 14: header semantics (files rebuilt with valid CRCs and blob tables) -------------


def _semantic(valid: bytes, mutate) -> bytes:
    header, _, _ = split_file(valid)
    header = copy.deepcopy(header)
    mutate(header)
    return rebuild(header, blobs_of(valid))


def test_rule14_format_member(tmp_path, valid, capsys):
    assert_rejected(tmp_path, _semantic(valid, lambda h: h.update(format="other")), capsys, "rule 3.1")


def test_rule14_unknown_source_format(tmp_path, valid, capsys):
    assert_rejected(tmp_path, _semantic(valid, lambda h: h["source"].update(format="pytorch")), capsys, "rule 3.2")


def test_rule14_bad_structure(tmp_path, valid, capsys):
    assert_rejected(tmp_path, _semantic(valid, lambda h: h["source"]["structure"].pop("children")), capsys, "HDF5 structure")


def test_rule14_bad_attribute(tmp_path, valid, capsys):
    def mutate(h):
        vars_node = h["source"]["structure"]["children"][0]["group"]["children"][0]["group"]["children"][0]["group"]
        vars_node["attrs"][0]["value"] = ["a", "b"]

    assert_rejected(tmp_path, _semantic(valid, mutate), capsys, "values do not match its shape")


def test_rule14_tensors_not_matching_structure(tmp_path, valid, capsys):
    assert_rejected(tmp_path, _semantic(valid, lambda h: h["tensors"].reverse()), capsys, "rule 3.3")


def test_rule14_blob_not_referenced(tmp_path, valid, capsys):
    header, _, _ = split_file(valid)
    assert_rejected(tmp_path, rebuild(header, blobs_of(valid) + [b"spare"]), capsys, "rule 3.4")


def test_rule14_blob_referenced_twice(tmp_path, valid, capsys):
    """Two parts naming one blob leave another unreferenced (sizes made to match, so only rule 3.4 breaks)."""

    def mutate(h):
        h["tensors"][1]["parts"][0].update(blob=0, shape=[6])
        h["tensors"][1]["shape"] = [6]  # the structure records no shapes: only rule 3.4 is broken

    data = _semantic(valid, mutate)
    header, _, _ = split_file(data)
    blobs = blobs_of(data)
    assert_rejected(tmp_path, rebuild(header, [blobs[0], blobs[0][:24]]), capsys, "rule 3.4")


@pytest.mark.parametrize("shape", [[2**20, 2**20], [-1, 3], [1] * 9, [2.5], "big"])
def test_rule14_absurd_shapes(tmp_path, valid, capsys, shape):
    def mutate(h):
        h["tensors"][0]["shape"] = shape
        h["tensors"][0]["parts"][0]["shape"] = shape

    assert_rejected(tmp_path, _semantic(valid, mutate), capsys, "shape")


def test_rule14_unknown_dtype(tmp_path, valid, capsys):
    assert_rejected(tmp_path, _semantic(valid, lambda h: h["tensors"][0].update(dtype="<c8")), capsys, "unsupported dtype")


def test_rule14_unknown_stage(tmp_path, valid, capsys):
    assert_rejected(tmp_path, _semantic(valid, lambda h: h["tensors"][0]["parts"][0]["codecs"][0].update(name="zstd")), capsys, "unknown stage 'zstd'")


def test_rule14_transform_in_codecs(tmp_path, valid, capsys):
    mutate = lambda h: h["tensors"][0]["parts"][0]["codecs"].insert(0, {"name": "dense", "configuration": {}})  # noqa: E731
    assert_rejected(tmp_path, _semantic(valid, mutate), capsys, "rule 4.3.1")


def test_rule14_two_serializers(tmp_path, valid, capsys):
    mutate = lambda h: h["tensors"][0]["parts"][0]["codecs"].append({"name": "raw", "configuration": {}})  # noqa: E731
    assert_rejected(tmp_path, _semantic(valid, mutate), capsys, "rule 4.3.3")


def test_rule14_array_stage_after_serializer(tmp_path, valid, capsys):
    mutate = lambda h: h["tensors"][0]["parts"][0]["codecs"].append({"name": "cast", "configuration": {"dtype": "<f2"}})  # noqa: E731
    assert_rejected(tmp_path, _semantic(valid, mutate), capsys, "rule 4.3.2")


def test_rule14_bytes_stage_without_serializer(tmp_path, valid, capsys):
    mutate = lambda h: h["tensors"][0]["parts"][0].update(codecs=[{"name": "huffman", "configuration": {}}])  # noqa: E731
    assert_rejected(tmp_path, _semantic(valid, mutate), capsys, "rule 4.3.4")


def test_rule14_part_spec_mismatch(tmp_path, valid, capsys):
    assert_rejected(tmp_path, _semantic(valid, lambda h: h["tensors"][0]["parts"][0].update(shape=[3, 2])), capsys, "rule 4.2")


def test_rule14_part_names(tmp_path, valid, capsys):
    assert_rejected(tmp_path, _semantic(valid, lambda h: h["tensors"][0]["parts"][0].update(name="other")), capsys, "rule 4.2")


def test_rule14_stage_object_members(tmp_path, valid, capsys):
    assert_rejected(tmp_path, _semantic(valid, lambda h: h["tensors"][0]["transform"].update(extra=1)), capsys, "rule 4.3")


def test_rule15_stage_config_rejected(tmp_path, valid, capsys):
    mutate = lambda h: h["tensors"][0]["parts"][0]["codecs"][0].update(configuration={"x": 1})  # noqa: E731
    assert_rejected(tmp_path, _semantic(valid, mutate), capsys, "unknown configuration fields")


def test_rule14_blob_size_does_not_match_serializer(tmp_path, valid, capsys):
    header, _, _ = split_file(valid)
    blobs = blobs_of(valid)
    blobs[0] = blobs[0][:20]
    assert_rejected(tmp_path, rebuild(header, blobs), capsys, "needs 24 bytes, the blob gives 20")


def test_rule14_bytes_stage_expansion_bound(tmp_path, valid, capsys):
    """A tiny blob may not claim a huge decoded size through a bytes stage."""

    def mutate(h):
        part = h["tensors"][0]["parts"][0]
        h["tensors"][0]["shape"] = part["shape"] = [4096, 4096]
        part["codecs"] = [{"name": "raw", "configuration": {}}, {"name": "lzw", "configuration": _lzw_config()}]

    assert_rejected(tmp_path, _semantic(valid, mutate), capsys, "beyond its bound")


def _lzw_config() -> dict:
    """A valid lzw configuration, taken from a real encoding."""
    from nnzip.stages import BytesSpec, get_stage

    _, config = get_stage("lzw").encode(b"abcabcabc", BytesSpec(9), {})
    return config


# --- JSON Schema --------------------------------------------------------------------------


def test_headers_validate_against_the_schema(tmp_path):
    """The header nnzip writes for real samples and the golden file follow spec/header.schema.json."""
    import jsonschema

    from .samples import SAMPLES

    schema = json.loads((Path(__file__).parent.parent / "spec" / "header.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    headers = [split_file(GOLDEN.read_bytes())[0]]
    for name in ("cnn.h5", "mlp.weights.h5"):
        api.compress(SAMPLES / name, tmp_path / (name + ".nnz"))
        headers.append(split_file((tmp_path / (name + ".nnz")).read_bytes())[0])
    for header in headers:
        jsonschema.validate(header, schema, cls=jsonschema.Draft202012Validator)
    broken = copy.deepcopy(headers[0])
    broken["blobs"][0]["offset"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)



# --- header dictionary ----------------------------------------------------------------------


def test_header_dictionary_in_the_package_is_the_spec_one():
    from nnzip.container import header_dictionary

    spec_copy = (Path(__file__).parent.parent / "spec" / "header-dictionary-1.txt").read_bytes()
    assert header_dictionary() == spec_copy and len(spec_copy) == 32768 and spec_copy.isascii()


def test_dictionary_header_round_trips_and_is_smaller(tmp_path):
    header, _, section = split_file(GOLDEN.read_bytes())
    from nnzip.container import encode_header, read_container

    stored, flags = encode_header({k: v for k, v in header.items() if k != "blobs"} | {"blobs": header["blobs"]}, dictionary=1)
    assert flags == 3 and len(stored) < len(zlib.compress(json.dumps(header).encode(), 9))
    data = assemble(header, section, flags=3, header_bytes=stored)
    import io as _io

    assert read_container(_io.BytesIO(data)).header == header


def test_rule4_dictionary_flag_without_zlib(tmp_path, valid, capsys):
    assert_rejected(tmp_path, valid[:12] + struct.pack("<I", 2) + valid[16:], capsys, "without bit 0")


def test_rule7_zlib_stream_without_the_dictionary_flag(tmp_path, valid, capsys):
    """A dictionary stream read as a plain one (flag bit 1 cleared) fails cleanly."""
    header, _, section = split_file(valid)
    from nnzip.container import encode_header

    stored, _ = encode_header(header, dictionary=1)
    assert_rejected(tmp_path, assemble(header, section, flags=1, header_bytes=stored), capsys, "not a valid zlib stream")


@pytest.mark.parametrize("parts", [3, 1.5, True, None, "values"])
def test_rule14_parts_not_a_list(tmp_path, valid, capsys, parts):
    """Found by fuzzing: a non-list 'parts' once escaped as a TypeError."""
    assert_rejected(tmp_path, _semantic(valid, lambda h: h["tensors"][1].update(parts=parts)), capsys, "rule 4.2")


def test_rule14_tensors_too_large_for_the_file(tmp_path, valid, capsys):
    """Rule 4.7: rank-1 SVD parts naming a 16384 x 16384 tensor (1 GiB) in a file of a few KB."""

    def mutate(h):
        entry = h["tensors"][0]
        entry["shape"] = [16384, 16384]
        entry["transform"] = {"name": "svd", "configuration": {"rank": 1}}
        entry["parts"] = [
            {"name": "u", "dtype": "<f4", "shape": [16384, 1], "codecs": [{"name": "raw", "configuration": {}}], "blob": 0},
            {"name": "s", "dtype": "<f4", "shape": [1], "codecs": [{"name": "raw", "configuration": {}}], "blob": 2},
            {"name": "vt", "dtype": "<f4", "shape": [1, 16384], "codecs": [{"name": "raw", "configuration": {}}], "blob": 3},
        ]

    header, _, _ = split_file(valid)
    header = copy.deepcopy(header)
    mutate(header)
    vector = np.ones(16384, "<f4").tobytes()
    blobs = [vector, blobs_of(valid)[1], np.ones(1, "<f4").tobytes(), vector]
    assert_rejected(tmp_path, rebuild(header, blobs), capsys, "rule 4.7")
