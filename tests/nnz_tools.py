"""Test helpers that build small source files and (deliberately broken) .nnz files."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import h5py
import numpy as np

from nnzip import api, cli
from nnzip.container import MAGIC, PREAMBLE_SIZE, align, crc32, write_container
from nnzip.formats import read_model
from nnzip.pipeline import TensorPlan

TINY_KERNEL = np.array([[1, 2, 3], [4, 5, 6]], dtype="<f4")
TINY_BIAS = np.array([0.5, -0.5, 0.0], dtype="<f4")


def write_tiny_weights_h5(path: Path) -> Path:
    """A Keras-3-``.weights.h5``-shaped file: layers/dense/vars/{0,1} and a ``name`` attribute."""
    with h5py.File(path, "w") as h5:
        vars_group = h5.create_group("layers/dense/vars")
        vars_group.attrs.create("name", "dense", dtype=h5py.string_dtype("utf-8"))
        vars_group.create_dataset("0", data=TINY_KERNEL)
        vars_group.create_dataset("1", data=TINY_BIAS)
    return path


def golden_tiny_bytes(tmp_path: Path) -> bytes:
    """The bytes of the spec's worked example (spec/container.md §7)."""
    source = write_tiny_weights_h5(tmp_path / "tiny.weights.h5")
    model = read_model(source)
    plans = {name: TensorPlan("dense", entropy=False) for name in model.tensors}
    header, blobs, _ = api.encode_model(model, source.name, plans=plans)
    header["writer"] = "nnzip (golden example)"
    out = io.BytesIO()
    write_container(out, header, blobs, compress_header=False)
    return out.getvalue()


def split_file(data: bytes) -> tuple[dict, int, bytes]:
    """(header, flags, data section) of a valid uncompressed-or-compressed .nnz held in memory."""
    from nnzip.container import read_container

    container = read_container(io.BytesIO(data))
    return container.header, struct.unpack_from("<I", data, 12)[0], data[container.data_start:]


def assemble(header: dict, data_section: bytes, *, major: int = 1, flags: int = 0, header_bytes: bytes | None = None, crc: int | None = None) -> bytes:
    """Raw .nnz bytes from parts, without any validation (to build broken files)."""
    stored = header_bytes if header_bytes is not None else json.dumps(header).encode()
    preamble = struct.pack("<8sHHIII", MAGIC, major, 0, flags, len(stored), crc32(stored) if crc is None else crc)
    head = preamble + stored
    return head + b"\0" * (align(len(head)) - len(head)) + data_section


def rebuild(header: dict, blobs: list[bytes]) -> bytes:
    """A well-formed file from a (possibly semantically broken) header and blobs."""
    header = {k: v for k, v in header.items() if k != "blobs"}
    out = io.BytesIO()
    write_container(out, header, blobs, compress_header=False)
    return out.getvalue()


def blobs_of(data: bytes) -> list[bytes]:
    """The blobs of a valid .nnz held in memory."""
    header, _, section = split_file(data)
    return [section[b["offset"]: b["offset"] + b["size"]] for b in header["blobs"]]


__all__ = ["PREAMBLE_SIZE", "TINY_BIAS", "TINY_KERNEL", "assemble", "blobs_of", "golden_tiny_bytes", "rebuild", "split_file", "write_tiny_weights_h5"]


def assert_decompress_rejects(tmp_path: Path, data: bytes, capsys, *fragments: str, output_name: str = "out.h5",
                              inspect_too: bool = False) -> str:
    """``nnzip decompress`` of *data* (written as ``bad.nnz`` in *tmp_path*) is refused; returns its error line.

    Status 1, one stderr line holding every fragment, no output and the folder as it was (no
    temporary file left); with *inspect_too*, ``nnzip inspect`` refuses the file as well (a rule
    the header check finds without decoding).
    """
    source = tmp_path / "bad.nnz"
    source.write_bytes(data)
    before = sorted(os.listdir(tmp_path))
    output = tmp_path / output_name
    status = cli.main(["decompress", str(source), "-o", str(output)])
    err = capsys.readouterr().err
    assert status == 1, err
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert not output.exists()
    assert sorted(os.listdir(tmp_path)) == before, "a refused file left an output or a temporary file behind"
    if inspect_too:
        assert cli.main(["inspect", str(source)]) == 1
        assert capsys.readouterr().err.startswith("nnzip: error: ")
    return err
