"""Independent chunks (format 1.1, spec/container.md §4.4): large parts coded in chunks, each its own blob.

The golden 1.1 example is pinned byte for byte (``tests/fixtures/golden-chunked.nnz``); a
chunked file decodes to exactly what an unchunked one does; a corrupt chunk is named by its
own CRC; every new MUST-reject rule (4.10) goes through the real CLI.  The chunk size is
lowered with ``monkeypatch`` so that files stay small: the code path is the same as for
4 MiB chunks.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.numpy import save_file

from .common import REGENERATE
from .nnz_tools import assert_decompress_rejects, blobs_of, rebuild, split_file
from nnzip import api, cli, pipeline
from nnzip.container import write_container
from nnzip.formats import read_model
from nnzip.pipeline import TensorPlan

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN_CHUNKED = FIXTURES / "golden-chunked.nnz"
GOLDEN_10 = FIXTURES / "golden-tiny.nnz"
#: The golden 1.1 example's kernel: 8 x 16 float32 of 0.0 and 1.0, 512 serialized bytes, coded in 192-byte chunks.
GOLDEN_KERNEL = (np.arange(128).reshape(8, 16) % 3 == 0).astype("<f4")
GOLDEN_CHUNK = 192


def golden_chunked_bytes(tmp_path: Path, monkeypatch) -> bytes:
    """The bytes of the spec's 1.1 worked example (spec/container.md §7.1)."""
    monkeypatch.setattr(pipeline, "CHUNK_SIZE", GOLDEN_CHUNK)
    source = tmp_path / "chunked.weights.h5"
    with h5py.File(source, "w") as h5:
        group = h5.create_group("layers/dense/vars")
        group.attrs.create("name", "dense", dtype=h5py.string_dtype("utf-8"))
        group.create_dataset("0", data=GOLDEN_KERNEL)
    model = read_model(source)
    plans = {name: TensorPlan("dense") for name in model.tensors}
    header, blobs, _ = api.encode_model(model, source.name, plans=plans)
    header["writer"] = "nnzip (golden example)"
    out = io.BytesIO()
    write_container(out, header, blobs, compress_header=False)
    return out.getvalue()


def test_golden_chunked_bytes_are_pinned(tmp_path, monkeypatch):
    data = golden_chunked_bytes(tmp_path, monkeypatch)
    if REGENERATE:
        GOLDEN_CHUNKED.write_bytes(data)
        header, _, _ = split_file(data)
        (FIXTURES / "golden-chunked.json").write_text(json.dumps(header, indent=1) + "\n")
    assert GOLDEN_CHUNKED.exists(), "tests/fixtures/golden-chunked.nnz is missing (python tests/regen_fixtures.py)"
    assert data == GOLDEN_CHUNKED.read_bytes(), "the writer's bytes changed: update spec/container.md §7.1 and regenerate on purpose"


def test_golden_chunked_matches_spec():
    """The figures of spec/container.md §7.1, checked on the committed file."""
    data = GOLDEN_CHUNKED.read_bytes()
    major, minor, flags = struct.unpack_from("<HHI", data, 8)
    assert (major, minor, flags) == (1, 1, 0)
    header, _, _ = split_file(data)
    assert header == json.loads((FIXTURES / "golden-chunked.json").read_text())
    (part,) = header["tensors"][0]["parts"]
    assert part["chunk_size"] == GOLDEN_CHUNK and part["blob"] == 0
    assert [c["name"] for c in part["codecs"]] == ["raw", "huffman"]
    assert len(header["blobs"]) == 3  # ceil(512 / 192) chunks: 192, 192 and 128 bytes decoded
    _, tensors = api.read_tensors(GOLDEN_CHUNKED)
    np.testing.assert_array_equal(tensors["layers/dense/vars/0"], GOLDEN_KERNEL)


def test_golden_10_still_decodes_and_is_still_written():
    """A file without chunks is what 1.0 wrote, version included: the 1.0 fixture still decodes."""
    assert struct.unpack_from("<HH", GOLDEN_10.read_bytes(), 8) == (1, 0)
    _, tensors = api.read_tensors(GOLDEN_10)
    assert list(tensors) == ["layers/dense/vars/0", "layers/dense/vars/1"]


def _random_model(path: Path) -> Path:
    rng = np.random.default_rng(9)
    save_file({
        "big": np.round(rng.standard_normal((256, 300)) * 4).astype(np.float32) / 4,  # entropy-codeable planes
        "ints": rng.integers(0, 7, size=70_000).astype(np.uint8),
        "small": rng.standard_normal(10).astype(np.float32),
    }, str(path))
    return path


@pytest.mark.parametrize("lossy", [False, True])
def test_chunked_decodes_like_unchunked(tmp_path, monkeypatch, lossy):
    source = _random_model(tmp_path / "m.safetensors")
    rules_args = ["--bits", "4"] if lossy else []
    assert cli.main(["compress", str(source), "-o", str(tmp_path / "whole.nnz"), "-q", *rules_args]) == 0
    monkeypatch.setattr(pipeline, "CHUNK_SIZE", 4096)
    assert cli.main(["compress", str(source), "-o", str(tmp_path / "chunked.nnz"), "-q", *rules_args]) == 0
    whole, chunked = (split_file((tmp_path / name).read_bytes())[0] for name in ("whole.nnz", "chunked.nnz"))
    assert len(chunked["blobs"]) > len(whole["blobs"]) + 10
    # Both use dictionary 2 and the compact header, so both are 1.2 (format_minor; 1.1/1.0 without
    # them), or 1.3 where a part is coded with rans.
    for header, name in ((chunked, "chunked.nnz"), (whole, "whole.nnz")):
        uses_rans = any(c["name"] == "rans" for t in header["tensors"] for p in t["parts"] for c in p["codecs"])
        assert struct.unpack_from("<H", (tmp_path / name).read_bytes(), 10)[0] == (3 if uses_rans else 2)
    _, a = api.read_tensors(tmp_path / "whole.nnz")
    _, b = api.read_tensors(tmp_path / "chunked.nnz")
    assert list(a) == list(b)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    if not lossy:
        assert cli.main(["decompress", str(tmp_path / "chunked.nnz"), "-o", str(tmp_path / "back.safetensors"), "-q"]) == 0
        assert (tmp_path / "back.safetensors").read_bytes() == source.read_bytes()
    summary = api.inspect(tmp_path / "chunked.nnz")
    assert summary["format_version"] in ("1.2", "1.3") and max(p["chunks"] for t in summary["tensors"] for p in t["parts"]) > 2


def test_chunks_cost_little(tmp_path, monkeypatch):
    """Chunking adds a chunk_size member and per-chunk tables, not a different coding: within 2%."""
    source = _random_model(tmp_path / "m.safetensors")
    whole = api.compress(source, tmp_path / "whole.nnz").file_bytes
    monkeypatch.setattr(pipeline, "CHUNK_SIZE", 32768)
    chunked = api.compress(source, tmp_path / "chunked.nnz").file_bytes
    assert whole < chunked < whole * 1.02


# --- a corrupt chunk, rule 4.10 -----------------------------------------------------------


def test_corrupt_chunk_is_found_by_its_own_crc(tmp_path, capsys):
    data = bytearray(GOLDEN_CHUNKED.read_bytes())
    header, _, section = split_file(bytes(data))
    entry = header["blobs"][1]  # the second chunk
    data[len(data) - len(section) + entry["offset"] + entry["size"] // 2] ^= 0x40
    assert_decompress_rejects(tmp_path, bytes(data), capsys, "rule 6.13", "blob 1 is corrupt")


def _golden_parts() -> tuple[dict, list[bytes]]:
    data = GOLDEN_CHUNKED.read_bytes()
    return split_file(data)[0], blobs_of(data)


@pytest.mark.parametrize("value", [0, -1, 512, 600, 192.0, "192", None, True])
def test_rule410_chunk_size_range(tmp_path, capsys, value):
    header, blobs = _golden_parts()
    header["tensors"][0]["parts"][0]["chunk_size"] = value
    assert_decompress_rejects(tmp_path, rebuild(header, blobs), capsys, "rule 4.10", "chunk_size")


def test_rule410_chunks_beyond_the_blob_table(tmp_path, capsys):
    header, blobs = _golden_parts()
    header["tensors"][0]["parts"][0]["chunk_size"] = 64  # 8 chunks, the file has 3 blobs
    assert_decompress_rejects(tmp_path, rebuild(header, blobs), capsys, "rule 4.10", "8 chunks")


def test_rule34_a_blob_no_chunk_references(tmp_path, capsys):
    header, blobs = _golden_parts()
    header["tensors"][0]["parts"][0]["chunk_size"] = 256  # 2 chunks: blob 2 is left over
    assert_decompress_rejects(tmp_path, rebuild(header, blobs), capsys, "rule 3.4")


def test_rule46_each_chunk_against_its_own_size(tmp_path, capsys):
    """Without a bytes stage each chunk must be exactly its slice of the serialized bytes."""
    header, blobs = _golden_parts()
    part = header["tensors"][0]["parts"][0]
    part["codecs"] = part["codecs"][:1]  # raw only: chunks must be 192, 192, 128 bytes
    assert_decompress_rejects(tmp_path, rebuild(header, blobs), capsys, "rule 4.6")
