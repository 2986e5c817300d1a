"""Format 1.2's smaller header (spec/container.md §2.2, §3.1, rules 6.4, 6.7, 6.21, 6.22), --strip and inspect's header share.

Every hostile file goes through ``cli.main`` and must exit 1 with a one-line error naming the
rule, leaving no output and no temporary file.
"""

from __future__ import annotations

import functools
import base64
import io
import json
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from .common import REGENERATE
from .nnz_tools import assert_decompress_rejects, blobs_of, split_file, write_tiny_weights_h5
from nnzip import api, cli
from nnzip.container import (FLAG_HEADER_COMPACT, FLAG_HEADER_DICTIONARY_2, FLAG_HEADER_ZLIB, MAGIC, align, compact_header, crc32,
                             encode_header, expand_compact, format_minor, header_dictionary_2, read_container, write_container)
from nnzip.formats import read_model
from nnzip.pipeline import TensorPlan

assert_rejected = functools.partial(assert_decompress_rejects, output_name="out.weights.h5")

ROOT = Path(__file__).parent.parent
SAMPLES = ROOT / "samples"
FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN_COMPACT = FIXTURES / "golden-compact.nnz"
#: Adler-32 of spec/header-dictionary-2.txt, the DICTID of every dictionary-2 stream (§2.2).
DICTIONARY_2_ADLER = 0xA6E1A1E3
FLAGS_12 = FLAG_HEADER_ZLIB | FLAG_HEADER_DICTIONARY_2 | FLAG_HEADER_COMPACT  # 13


def _preamble(data: bytes) -> tuple[int, int, int]:
    """(minor, flags, H) of a .nnz held in memory."""
    _, minor, flags, size, _ = struct.unpack_from("<HHIII", data, 8)
    return minor, flags, size


def _assemble(stored: bytes, section: bytes, *, minor: int, flags: int) -> bytes:
    """A .nnz with the given stored header bytes and preamble fields, and a valid header CRC."""
    head = struct.pack("<8sHHIII", MAGIC, 1, minor, flags, len(stored), crc32(stored)) + stored
    return head + b"\0" * (align(len(head)) - len(head)) + section


def _deflate(text: bytes, dictionary: bytes | None) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, **({"zdict": dictionary} if dictionary else {}))
    return deflater.compress(text) + deflater.flush()


def _compact_text(header: dict) -> bytes:
    return json.dumps(compact_header(header), separators=(",", ":")).encode()


@pytest.fixture()
def tiny(tmp_path) -> tuple[dict, bytes]:
    """(full header, data section) of a valid 1.2 file of the tiny example, lossless with default plans."""
    source = write_tiny_weights_h5(tmp_path / "tiny.weights.h5")
    api.compress(source, tmp_path / "tiny.nnz")
    data = (tmp_path / "tiny.nnz").read_bytes()
    assert _preamble(data)[:2] == (2, FLAGS_12)
    header, _, section = split_file(data)
    (tmp_path / "tiny.nnz").unlink()
    source.unlink()
    return header, section


# --- dictionary 2 --------------------------------------------------------------------------


def test_dictionary_2_in_the_package_is_the_spec_one():
    spec_copy = (ROOT / "spec" / "header-dictionary-2.txt").read_bytes()
    assert header_dictionary_2() == spec_copy and len(spec_copy) == 32768 and spec_copy.isascii()
    assert zlib.adler32(spec_copy) == DICTIONARY_2_ADLER


def test_new_files_are_1_2_with_dictionary_2(tmp_path):
    """§2.2: the stream starts 78 F9 and DICTID A6 E1 A1 E3; the preamble says 1.2, flags 13."""
    out = tmp_path / "s.nnz"
    assert cli.main(["compress", str(SAMPLES / "softmax.weights.h5"), "-o", str(out), "-q"]) == 0
    data = out.read_bytes()
    minor, flags, _ = _preamble(data)
    assert (minor, flags) == (_minor_1_3(split_file(data)[0], 2), FLAGS_12)
    assert data[24:30] == bytes.fromhex("78F9A6E1A1E3")


@pytest.mark.parametrize("sample", ["softmax.h5", "softmax.weights.h5", "cnn.keras", "mlp.onnx"])
def test_1_2_header_is_smaller_and_reads_the_same(tmp_path, sample):
    """The same header stored the 1.0 way (full form, dictionary 1) is larger, and both read as the same header."""
    out = tmp_path / "x.nnz"
    assert cli.main(["compress", str(SAMPLES / sample), "-o", str(out), "-q", "--bits", "4"]) == 0
    data = out.read_bytes()
    header, _, section = split_file(data)
    old = io.BytesIO()
    write_container(old, {k: v for k, v in header.items() if k != "blobs"}, blobs_of(data), dictionary=1)
    assert _preamble(old.getvalue())[:2] == (_minor_1_3(header, 0), 3)  # 1.3 for its stages, whatever the header
    assert _preamble(data)[2] < _preamble(old.getvalue())[2]
    assert split_file(old.getvalue())[0] == header
    assert old.getvalue()[-len(section):] == section


def test_rebuilt_file_is_the_same_from_1_0_and_1_2(tmp_path):
    """A 1.0 file and the 1.2 file of the same header decompress to identical bytes."""
    out = tmp_path / "new.nnz"
    assert cli.main(["compress", str(SAMPLES / "cnn.keras"), "-o", str(out), "-q"]) == 0
    data = out.read_bytes()
    header, _, _ = split_file(data)
    (tmp_path / "old.nnz").write_bytes(_written(header, blobs_of(data), dictionary=1))
    for name in ("new", "old"):
        assert cli.main(["decompress", str(tmp_path / f"{name}.nnz"), "-o", str(tmp_path / f"{name}.keras"), "-q"]) == 0
    assert (tmp_path / "new.keras").read_bytes() == (tmp_path / "old.keras").read_bytes()


def _minor_1_3(header: dict, otherwise: int) -> int:
    """3 when a codec is ``dq`` or ``rans``, or ``arith`` in its levels mode (format 1.3, spec/container.md §2), else *otherwise*."""
    codecs = [codec for entry in header["tensors"] for part in entry["parts"] for codec in part["codecs"]]
    return 3 if any(codec["name"] in ("dq", "rans") or (codec["name"] == "arith" and "zero" in codec["configuration"])
                    for codec in codecs) else otherwise


def _written(header: dict, blobs: list[bytes], **options) -> bytes:
    out = io.BytesIO()
    write_container(out, {k: v for k, v in header.items() if k != "blobs"}, blobs, **options)
    return out.getvalue()


def test_version_choice_in_one_function():
    """format_minor: 1.2 features first, then chunks (1.1), else 1.0."""
    chunked = {"tensors": [{"parts": [{"chunk_size": 4}]}]}
    assert format_minor({}, 0) == 0 and format_minor({}, 3) == 0
    assert format_minor(chunked, 3) == 1 and format_minor(chunked, 0) == 1
    assert format_minor({}, FLAGS_12) == 2 and format_minor(chunked, FLAGS_12) == 2


# --- the compact form (§3.1) ---------------------------------------------------------------


@pytest.mark.parametrize("sample", ["softmax.h5", "mlp.weights.h5", "cnn.keras", "cnn.onnx", "mlp_tfkeras.h5"])
def test_compact_form_expands_to_the_full_header(tmp_path, sample):
    out = tmp_path / "x.nnz"
    assert cli.main(["compress", str(SAMPLES / sample), "-o", str(out), "-q", "--uniform", "0.35"]) == 0
    header = split_file(out.read_bytes())[0]
    compact = json.loads(_compact_text(header))
    assert all(isinstance(entry, list) for entry in compact["blobs"])  # offsets are derived
    assert all("blob" not in part for entry in compact["tensors"] for part in entry["parts"])
    assert all("name" not in entry for entry in compact["tensors"])  # the structure's names (rule 3.3)
    if sample.endswith(".keras"):  # config.json and metadata.json are carried as text, not base64
        members = compact["source"]["structure"]["members"]
        assert {m["name"] for m in members if "text" in m} >= {"config.json", "metadata.json"}
    assert expand_compact(compact) == header  # (expands in place)


def test_chunked_parts_keep_their_blob_and_round_trip():
    header = {"tensors": [{"name": "a", "dtype": "<f4", "shape": [4], "parts": [{"name": "values", "dtype": "<f4", "shape": [4], "chunk_size": 8, "blob": 0}]},
                          {"name": "b", "dtype": "<f4", "shape": [2], "parts": [{"name": "values", "dtype": "|u1", "shape": [8], "blob": 2}]}],
              "blobs": [{"offset": 0, "size": 8, "crc32": 1}, {"offset": 8, "size": 8, "crc32": 2}, {"offset": 16, "size": 3, "crc32": 3}]}
    compact = compact_header(header)
    assert compact["tensors"][1]["parts"][0]["blob"] == 2 and "dtype" in compact["tensors"][1]["parts"][0]
    assert "blob" not in compact["tensors"][0]["parts"][0] and "dtype" not in compact["tensors"][0]["parts"][0]
    assert expand_compact(json.loads(json.dumps(compact))) == header


def test_malformed_header_is_written_in_the_full_form(tiny):
    """A header the compact form cannot hold (a part without 'blob') is stored the 1.0 way, as it is."""
    header, _ = tiny
    broken = json.loads(json.dumps(header))
    del broken["tensors"][1]["parts"][0]["blob"]
    stored, flags = encode_header(broken)
    assert flags == 3
    assert json.loads(zlib.decompressobj(zdict=__import__("nnzip.container").container.header_dictionary()).decompress(stored)) == broken


def test_golden_compact_bytes_are_pinned(tmp_path):
    """tests/fixtures/golden-compact.nnz: the tiny example (§7) written as 1.2 (spec/container.md §7.2)."""
    source = write_tiny_weights_h5(tmp_path / "tiny.weights.h5")
    model = read_model(source)
    plans = {name: TensorPlan("dense", entropy=False) for name in model.tensors}
    header, blobs, _ = api.encode_model(model, source.name, plans=plans)
    header["writer"] = "nnzip (golden example)"
    data = _written(header, blobs)
    if REGENERATE:
        GOLDEN_COMPACT.write_bytes(data)
        (FIXTURES / "golden-compact.json").write_text(json.dumps(json.loads(_compact_text(split_file(data)[0])), indent=1) + "\n")
    assert data == GOLDEN_COMPACT.read_bytes(), "the 1.2 writer's bytes changed: update spec/container.md §7.2 and regenerate on purpose"


def test_golden_compact_matches_spec_figures():
    data = GOLDEN_COMPACT.read_bytes()
    minor, flags, size = _preamble(data)
    assert (minor, flags) == (2, 13) and data[24:30] == bytes.fromhex("78F9A6E1A1E3")
    text = zlib.decompressobj(zdict=header_dictionary_2()).decompress(data[24:24 + size])
    assert json.loads(text) == json.loads((FIXTURES / "golden-compact.json").read_text())
    assert json.loads(text)["blobs"] == [[24, 423224612], [12, 415913641]]
    assert size == 95 and len(data) == 156 and data[16:24] == bytes.fromhex("5F00000061A7AEF9") == struct.pack("<II", 95, crc32(data[24:119]))
    assert data[119] == 0 and data[120:144] == np.array([[1, 2, 3], [4, 5, 6]], "<f4").tobytes()  # D = 120
    _, tensors = api.read_tensors(GOLDEN_COMPACT)
    np.testing.assert_array_equal(tensors["layers/dense/vars/0"], np.array([[1, 2, 3], [4, 5, 6]], "<f4"))


# --- hostile files: rules 6.4, 6.7, 6.21, 6.22 ---------------------------------------------


def test_rule6_21_dictionary_2_in_a_file_claiming_1_1(tmp_path, tiny, capsys):
    header, section = tiny
    stored = _deflate(_compact_text(header), header_dictionary_2())
    assert_rejected(tmp_path, _assemble(stored, section, minor=1, flags=FLAGS_12), capsys, "rule 6.21", "1.1")


def test_rule6_21_compact_flag_in_a_file_claiming_1_0(tmp_path, tiny, capsys):
    header, section = tiny
    assert_rejected(tmp_path, _assemble(_compact_text(header), section, minor=0, flags=FLAG_HEADER_COMPACT), capsys, "rule 6.21", "1.0")


def test_uncompressed_compact_header_is_read(tmp_path, tiny, capsys):
    """Bit 3 without bit 0: a plain-JSON compact header is valid 1.2."""
    header, section = tiny
    (tmp_path / "ok.nnz").write_bytes(_assemble(_compact_text(header), section, minor=2, flags=FLAG_HEADER_COMPACT))
    assert api.read_tensors(tmp_path / "ok.nnz")[0] == header


def test_rule6_7_wrong_dictid_for_dictionary_2(tmp_path, tiny, capsys):
    """A stream made with dictionary 1 under flag bit 2 names the wrong DICTID."""
    from nnzip.container import header_dictionary

    header, section = tiny
    stored = _deflate(_compact_text(header), header_dictionary())
    assert_rejected(tmp_path, _assemble(stored, section, minor=2, flags=FLAGS_12), capsys, "rule 6.7", "dictionary 2")


def test_rule6_7_dictionary_2_flag_on_a_plain_stream(tmp_path, tiny, capsys):
    header, section = tiny
    assert_rejected(tmp_path, _assemble(_deflate(_compact_text(header), None), section, minor=2, flags=FLAGS_12), capsys, "rule 6.7", "FDICT/DICTID")


def test_rule6_7_dictionary_2_stream_without_its_flag(tmp_path, tiny, capsys):
    header, section = tiny
    stored = _deflate(_compact_text(header), header_dictionary_2())
    assert_rejected(tmp_path, _assemble(stored, section, minor=2, flags=FLAG_HEADER_ZLIB | FLAG_HEADER_COMPACT), capsys, "rule 6.7")


@pytest.mark.parametrize("flags, fragment", [(FLAG_HEADER_DICTIONARY_2 | FLAG_HEADER_COMPACT, "without bit 0"),
                                             (FLAGS_12 | 2, "both set")])
def test_rule6_4_dictionary_2_flag_combinations(tmp_path, tiny, capsys, flags, fragment):
    header, section = tiny
    stored = _deflate(_compact_text(header), header_dictionary_2())
    assert_rejected(tmp_path, _assemble(stored, section, minor=2, flags=flags), capsys, "rule 6.4", fragment)


def _compact_file(header: dict, section: bytes, mutate) -> bytes:
    compact = json.loads(_compact_text(header))
    mutate(compact)
    stored = _deflate(json.dumps(compact).encode(), header_dictionary_2())
    return _assemble(stored, section, minor=2, flags=FLAGS_12)


@pytest.mark.parametrize("entry", [[24], [24, 1, 2], [-1, 5], [24, 2**32], ["24", 1], [24, True]], ids=str)
def test_rule6_22_bad_compact_blob(tmp_path, tiny, capsys, entry):
    header, section = tiny
    assert_rejected(tmp_path, _compact_file(header, section, lambda h: h["blobs"].__setitem__(0, entry)), capsys, "rule 6.22", "[size, crc32]")


def test_rule6_22_compact_blob_after_a_broken_entry(tmp_path, tiny, capsys):
    header, section = tiny
    assert_rejected(tmp_path, _compact_file(header, section, lambda h: h["blobs"].__setitem__(0, {"offset": "x", "size": 1, "crc32": 1})),
                    capsys, "rule 6.22")


def test_rule6_22_part_without_blob_after_a_bad_one(tmp_path, tiny, capsys):
    header, section = tiny
    assert_rejected(tmp_path, _compact_file(header, section, lambda h: h["tensors"][0]["parts"][0].__setitem__("blob", "0")),
                    capsys, "rule 6.22", "'blob'")


def test_rule6_22_part_without_dtype_of_a_tensor_without_one(tmp_path, tiny, capsys):
    header, section = tiny
    assert_rejected(tmp_path, _compact_file(header, section, lambda h: h["tensors"][0].pop("dtype")), capsys, "rule 6.22", "dtype")


def test_derived_blob_that_is_wrong_is_caught_by_rule_3_4(tmp_path, tiny, capsys):
    """An explicit blob 1 on the first part makes the second derive 2, beyond the blob table."""
    header, section = tiny
    assert_rejected(tmp_path, _compact_file(header, section, lambda h: h["tensors"][0]["parts"][0].__setitem__("blob", 1)), capsys, "rule")


def test_rule6_22_more_unnamed_tensors_than_the_structure_names(tmp_path, tiny, capsys):
    header, section = tiny

    def mutate(h):
        h["tensors"].append(json.loads(json.dumps(h["tensors"][1])))
    assert_rejected(tmp_path, _compact_file(header, section, mutate), capsys, "rule 6.22", "'name'")


def test_unnamed_tensors_with_a_broken_structure_report_the_structure(tmp_path, tiny, capsys):
    header, section = tiny
    assert_rejected(tmp_path, _compact_file(header, section, lambda h: h["source"].__setitem__("structure", {"attrs": 5})), capsys,
                    "rule 6.22")


def test_named_tensors_in_a_compact_header_are_still_checked(tmp_path, tiny, capsys):
    """A compact header may keep the names; wrong ones still break rule 3.3."""
    header, section = tiny
    assert_rejected(tmp_path, _compact_file(header, section, lambda h: h["tensors"][0].__setitem__("name", "layers/dense/vars/9")), capsys,
                    "rule 3.3")


@pytest.fixture()
def keras_v3_file(tmp_path) -> tuple[dict, bytes]:
    out = tmp_path / "c.nnz"
    assert cli.main(["compress", str(SAMPLES / "cnn.keras"), "-o", str(out), "-q", "--bits", "4"]) == 0
    header, _, section = split_file(out.read_bytes())
    out.unlink()
    return header, section


@pytest.mark.parametrize("text", [5, None, ["{}"]], ids=str)
def test_rule6_22_keras_v3_text_not_a_string(tmp_path, keras_v3_file, capsys, text):
    header, section = keras_v3_file

    def mutate(h):
        member = next(m for m in h["source"]["structure"]["members"] if m["name"] == "config.json")
        member["text"] = text
    assert_rejected(tmp_path, _compact_file(header, section, mutate), capsys, "rule 6.22", "text")


def test_rule6_22_keras_v3_text_and_data(tmp_path, keras_v3_file, capsys):
    header, section = keras_v3_file

    def mutate(h):
        member = next(m for m in h["source"]["structure"]["members"] if m["name"] == "config.json")
        member["data"] = "e30="
    assert_rejected(tmp_path, _compact_file(header, section, mutate), capsys, "rule 6.22")


def test_rule6_22_keras_v3_text_with_a_lone_surrogate(tmp_path, keras_v3_file, capsys):
    """A \\udc80 escape passes rule 6.19 (it stands for a byte in HDF5 strings) but is not text to encode here."""
    header, section = keras_v3_file

    def mutate(h):
        member = next(m for m in h["source"]["structure"]["members"] if m["name"] == "config.json")
        member["text"] = "{}\udc80"
    assert_rejected(tmp_path, _compact_file(header, section, mutate), capsys, "rule 6.22", "surrogate")


# --- --strip -------------------------------------------------------------------------------


def test_strip_drops_training_config_and_the_file_still_loads(tmp_path, keras):
    out = tmp_path / "s.nnz"
    assert cli.main(["compress", str(SAMPLES / "softmax.h5"), "-o", str(out), "-q", "--strip"]) == 0
    keep = tmp_path / "k.nnz"
    assert cli.main(["compress", str(SAMPLES / "softmax.h5"), "-o", str(keep), "-q"]) == 0
    header = split_file(out.read_bytes())[0]
    assert "training_config" not in json.dumps(header["source"]) and "training_config" in json.dumps(split_file(keep.read_bytes())[0]["source"])
    assert "plan" not in header and not any("stats" in entry for entry in header["tensors"])
    rebuilt = tmp_path / "rebuilt.h5"
    assert cli.main(["decompress", str(out), "-o", str(rebuilt), "-q"]) == 0
    with h5py.File(rebuilt, "r") as h5, h5py.File(SAMPLES / "softmax.h5", "r") as original:
        assert "training_config" in original.attrs and "training_config" not in h5.attrs
        assert h5.attrs["model_config"] == original.attrs["model_config"]
    x = np.load(SAMPLES / "fashion-mnist-val.npz")["x"][:64]
    model = keras.models.load_model(rebuilt, compile=True)
    reference = keras.models.load_model(SAMPLES / "softmax.h5")
    np.testing.assert_array_equal(np.asarray(model.predict(x, verbose=0)), np.asarray(reference.predict(x, verbose=0)))
    status = cli.main(["verify", str(out), "--original", str(SAMPLES / "softmax.h5"), "--data", str(SAMPLES / "fashion-mnist-val.npz")])
    assert status == 0


def test_strip_keras_v3_drops_compile_config(tmp_path, keras):
    out = tmp_path / "c.nnz"
    assert cli.main(["compress", str(SAMPLES / "mlp.keras"), "-o", str(out), "-q", "--strip"]) == 0
    header = split_file(out.read_bytes())[0]
    assert "plan" not in header
    config = next(m for m in header["source"]["structure"]["members"] if m["name"] == "config.json")
    assert "compile_config" not in json.loads(base64.b64decode(config["data"]))
    rebuilt = tmp_path / "rebuilt.keras"
    assert cli.main(["decompress", str(out), "-o", str(rebuilt), "-q"]) == 0
    x = np.load(SAMPLES / "fashion-mnist-val.npz")["x"][:32]
    model, reference = keras.models.load_model(rebuilt), keras.models.load_model(SAMPLES / "mlp.keras")
    np.testing.assert_array_equal(np.asarray(model.predict(x, verbose=0)), np.asarray(reference.predict(x, verbose=0)))


def test_strip_leaves_the_structure_of_other_formats_alone(tmp_path):
    a, b = tmp_path / "a.nnz", tmp_path / "b.nnz"
    assert cli.main(["compress", str(SAMPLES / "softmax.weights.h5"), "-o", str(a), "-q", "--strip", "--bits", "4"]) == 0
    assert cli.main(["compress", str(SAMPLES / "softmax.weights.h5"), "-o", str(b), "-q", "--bits", "4"]) == 0
    stripped, full = split_file(a.read_bytes())[0], split_file(b.read_bytes())[0]
    assert stripped["source"] == full["source"] and len(a.read_bytes()) < len(b.read_bytes())
    assert blobs_of(a.read_bytes()) == blobs_of(b.read_bytes())
    assert cli.main(["decompress", str(a), "-o", str(tmp_path / "a.weights.h5"), "-q"]) == 0
    assert cli.main(["decompress", str(b), "-o", str(tmp_path / "b.weights.h5"), "-q"]) == 0
    assert (tmp_path / "a.weights.h5").read_bytes() == (tmp_path / "b.weights.h5").read_bytes()


def test_stripped_file_inspects(tmp_path, capsys):
    out = tmp_path / "s.nnz"
    assert cli.main(["compress", str(SAMPLES / "softmax.h5"), "-o", str(out), "-q", "--strip", "--bits", "4"]) == 0
    assert cli.main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["plan"] is None and info["tensors"][1]["error"] is None
    assert cli.main(["inspect", str(out)]) == 0


def test_strip_keyword_of_the_api(tmp_path):
    import nnzip

    nnzip.compress(str(SAMPLES / "softmax.h5"), str(tmp_path / "s.nnz"), strip=True)
    header = split_file((tmp_path / "s.nnz").read_bytes())[0]
    assert "plan" not in header and "training_config" not in json.dumps(header)


def test_strip_in_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["compress", "--help"])
    assert "--strip" in capsys.readouterr().out


# --- inspect ------------------------------------------------------------------------------


def test_inspect_reports_the_header_share(tmp_path, capsys):
    out = tmp_path / "s.nnz"
    assert cli.main(["compress", str(SAMPLES / "softmax.h5"), "-o", str(out), "-q", "--bits", "4"]) == 0
    capsys.readouterr()
    assert cli.main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    data = out.read_bytes()
    assert info["header_bytes"] == _preamble(data)[2]
    assert info["header_share"] == round(info["header_bytes"] / len(data), 4) and 0 < info["header_share"] < 0.2
    assert info["format_version"] == "1.2"
    assert cli.main(["inspect", str(out)]) == 0
    assert f"(header {info['header_bytes']:,}, {info['header_share']:.1%} of the file)" in capsys.readouterr().out


def test_reading_1_2_parses_the_header_once(tmp_path, tiny):
    """read_container expands the compact form: every later check sees the full header."""
    header, section = tiny
    data = _assemble(_deflate(_compact_text(header), header_dictionary_2()), section, minor=2, flags=FLAGS_12)
    container = read_container(io.BytesIO(data))
    assert container.header == header and container.version == (1, 2)
