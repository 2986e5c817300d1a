"""What ``nnzip inspect`` reports of an opened ``.nnz``: :func:`summary` and its per-tensor and per-part rows.

It reads through an opened, checked reader (:class:`nnzip.reader.NnzReader`, which calls it
for :func:`nnzip.inspect`); nothing here checks or opens a file.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import formats
from .chains import describe_chain
from .pipeline import part_blobs, serialized_bytes, serialized_entropy


def summary(reader) -> dict:
    """The JSON-able summary of an open :class:`~nnzip.reader.NnzReader`: source, sizes, and per tensor chain, bytes, error.

    Every blob is read (its CRC checked) and its bytes stage undone to report the Shannon
    bound of what was coded next to the bytes it takes.
    """
    header, container = reader.header, reader.container
    tensors = [_tensor_summary(entry, reader.blob) for entry in header["tensors"]]
    if header["source"]["format"] == formats.onnx_format.FORMAT_ID:  # what each tensor feeds (Gemm:1, Gather:0, Reshape:1 ...)
        feeds = {record["name"]: record["feeds"] for record in header["source"]["structure"]["tensors"]}
        for row in tensors:
            row["feeds"] = feeds.get(row["name"], [])
    original = sum(t["original_bytes"] for t in tensors)
    file_size, header_size = container.file_size, container.header_stored_size
    return {
        "file": reader.name,
        "format_version": f"{container.version[0]}.{container.version[1]}",
        "writer": header.get("writer"),
        "source_format": header["source"]["format"],
        "source_filename": header["source"].get("filename"),
        "file_bytes": file_size,
        "header_bytes": header_size,
        "header_share": round(header_size / max(file_size, 1), 4),  # the stored header's fraction of the file
        "tensor_bytes_original": original,
        "ratio": round(original / max(file_size, 1), 4),
        "optimizer": "dropped" if header["source"].get("dropped") else "kept or absent",
        "dropped": header["source"].get("dropped", []),
        "plan": header.get("plan"),
        "tensors": tensors,
    }


def _tensor_summary(entry: dict, blob: Callable[[int], bytes]) -> dict:
    """One tensor's row: its chain in words, its parts, bytes before and after, bits per weight, recorded error."""

    size = math.prod(entry["shape"])
    nbytes = size * np.dtype(entry["dtype"]).itemsize
    parts = [_part_summary(part, [blob(index) for index in part_blobs(part)]) for part in entry["parts"]]
    stored = sum(p["bytes"] for p in parts)
    stats = entry.get("stats", {})
    return {
        "name": entry["name"],
        "shape": entry["shape"],
        "dtype": np.dtype(entry["dtype"]).name,
        "method": describe_chain(entry),
        "choice": stats.get("choice"),
        # The weight whose lossy storage this (bias) tensor's new values compensate, when the budget search changed it.
        "bias_correction": stats.get("bias_correction"),
        "parts": parts,
        "original_bytes": nbytes,
        "stored_bytes": stored,
        "bits_per_weight": round(8 * stored / size, 4) if size else 0.0,
        "error": stats.get("error"),
    }


def _part_summary(part: dict, blobs: list[bytes]) -> dict:
    """One part's row: its codecs, stored bytes and chunks, serialized bytes and their order-0 entropy."""
    serialized = serialized_bytes(part, blobs)
    return {
        "name": part["name"],
        "codecs": [c["name"] for c in part["codecs"]],
        "bytes": sum(map(len, blobs)),
        "chunks": len(blobs),
        "serialized_bytes": len(serialized),
        "entropy_bytes": round(serialized_entropy(part["codecs"], serialized), 1),
    }
