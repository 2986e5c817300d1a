"""Read weights straight from a ``.nnz``: :func:`open` (a lazy mapping) and :func:`load` (a dict).

For deployment code: no rebuilt model file, and a ``.nnz`` fetched over the network need
not touch the disk (pass its bytes or a binary file object)::

    import nnzip
    with nnzip.open("model.nnz") as f:           # or nnzip.open(data_bytes), nnzip.open(response)
        print(f.source_format, list(f))         # checks the whole header, reads no blob yet
        kernel = f["model_weights/dense/dense/kernel:0"]   # reads and decodes only that tensor's blobs
    weights = nnzip.load("model.nnz")           # {name: numpy array}, every tensor

The header is checked exactly as ``nnzip decompress`` checks it (spec/container.md §3-§6,
within *limits*) when the file is opened; each blob's CRC-32 is checked when it is read.
"""

from __future__ import annotations

import io as _io
import os
from collections.abc import Iterator, Mapping
from typing import BinaryIO, Union

import numpy as np

from .container import Container, open_container, read_container
from .errors import FormatError
from .limits import DEFAULT_LIMITS, DecodeLimits
from .pipeline import decode_tensor

#: What :func:`open` and :func:`load` read: a path, the file's bytes, or a binary file object.
Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]
#: A file object that cannot seek (a socket, an HTTP response) is read into memory, at most this much.
MAX_UNSEEKABLE_BYTES = 2**34


class NnzFile(Mapping):
    """A read-only mapping ``tensor name -> numpy array`` over one ``.nnz`` (use :func:`open`).

    Indexing decodes that tensor only, reading only its own blobs; nothing is cached,
    so holding the mapping costs the header, not the weights.

    >>> import nnzip, numpy as np, io
    >>> out = io.BytesIO()
    >>> _ = nnzip.compress({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, out)
    >>> with nnzip.open(out.getvalue()) as f:
    ...     f.source_format, list(f), f["w"].shape
    ('npz', ['w'], (2, 3))
    """

    def __init__(self, source: Source, *, limits: DecodeLimits = DEFAULT_LIMITS):
        from .api import blob_sizes, check_header

        self._limits = limits
        self._name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<stream>"
        self._container, self._owned = _open(source)
        try:
            check_header(self._container.header, self._container.file_size, limits)
        except BaseException:
            self.close()
            raise
        self._entries = {entry["name"]: entry for entry in self._container.header["tensors"]}
        self._sizes = blob_sizes(self._container.header)

    # --- the mapping --------------------------------------------------------------------

    def __getitem__(self, name: str) -> np.ndarray:
        """Decode tensor *name* (its blobs only, CRCs checked); KeyError when the file has no such tensor."""
        entry = self._entries[name]
        if self._container is None:
            raise ValueError("I/O operation on a closed nnzip file")
        return decode_tensor(entry, self._container.blob, self._sizes, self._limits)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    # --- what the header says -----------------------------------------------------------

    @property
    def header(self) -> dict:
        """The checked header (spec/container.md §3): source, structure, tensors, blob table, plan."""
        return self._container.header

    @property
    def source_format(self) -> str:
        """The source format the ``.nnz`` was made from: ``keras-h5``, ``safetensors``, ``npz`` …"""
        return self._container.header["source"]["format"]

    def entry(self, name: str) -> dict:
        """The header entry of tensor *name*: dtype, shape, stage chain, parts."""
        return self._entries[name]

    def inspect(self) -> dict:
        """The same summary as :func:`nnzip.inspect` (reads every blob to check its CRC)."""
        from . import api

        if isinstance(self._name, str) and self._name != "<stream>" and self._owned:
            return api.inspect(self._name, limits=self._limits)
        return _inspect_container(self._container, self._name)

    # --- life cycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Release the file (a caller's file object is left open: it is the caller's)."""
        if self._container is not None and self._owned:
            self._container.close()
        self._container = None

    def __enter__(self) -> "NnzFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<nnzip.NnzFile {self._name!r}: {len(self)} tensors, source {self.source_format if self._container else 'closed'}>"


def _open(source: Source) -> tuple[Container, bool]:
    """The validated container of *source* and whether we own (and so close) its handle."""
    if isinstance(source, (str, os.PathLike)):
        return open_container(source), True
    if isinstance(source, (bytes, bytearray, memoryview)):
        return read_container(_io.BytesIO(bytes(source))), True
    if not hasattr(source, "read"):
        raise TypeError(f"nnzip.open takes a path, bytes or a binary file object, not {type(source).__name__}")
    seekable = getattr(source, "seekable", lambda: False)()
    if seekable:
        return read_container(source), False
    data = source.read(MAX_UNSEEKABLE_BYTES + 1)  # the reader seeks: an unseekable stream is read whole, capped
    if not isinstance(data, bytes):
        raise TypeError("nnzip.open needs a binary file object (opened with 'rb')")
    if len(data) > MAX_UNSEEKABLE_BYTES:
        raise FormatError(f"the stream holds more than {MAX_UNSEEKABLE_BYTES:,} bytes: give a path or a seekable file")
    return read_container(_io.BytesIO(data)), True


def _inspect_container(container: Container, name: str) -> dict:
    """:func:`nnzip.api.inspect`'s summary for a container opened from bytes or a file object."""
    from . import api

    header = container.header
    tensors = [api._tensor_summary(entry, container.blob) for entry in header["tensors"]]
    original = sum(t["original_bytes"] for t in tensors)
    return {
        "file": name,
        "format_version": f"{container.version[0]}.{container.version[1]}",
        "writer": header.get("writer"),
        "source_format": header["source"]["format"],
        "source_filename": header["source"].get("filename"),
        "file_bytes": container.file_size,
        "header_bytes": container.header_stored_size,
        "header_share": round(container.header_stored_size / max(container.file_size, 1), 4),  # as api.inspect
        "tensor_bytes_original": original,
        "ratio": round(original / max(container.file_size, 1), 4),
        "optimizer": "dropped" if header["source"].get("dropped") else "kept or absent",
        "dropped": header["source"].get("dropped", []),
        "plan": header.get("plan"),
        "tensors": tensors,
    }


def open(source: Source, *, limits: DecodeLimits = DEFAULT_LIMITS) -> NnzFile:  # noqa: A001 - nnzip.open, as gzip.open
    """Open a ``.nnz`` for reading tensors one at a time; see :class:`NnzFile`.

    *source* is a path, the file's bytes, or a binary file object (read in place when
    it can seek, else read into memory up to :data:`MAX_UNSEEKABLE_BYTES`).  A bad file
    raises :class:`nnzip.FormatError` naming the spec rule, here or when a corrupt blob is read.

    >>> import nnzip
    >>> with nnzip.open("samples/mlp.nnz") as f:          # doctest: +SKIP
    ...     w = f["model_weights/hidden/hidden/kernel:0"]
    """
    return NnzFile(source, limits=limits)


def load(source: Source, *, limits: DecodeLimits = DEFAULT_LIMITS) -> dict[str, np.ndarray]:
    """Every tensor of a ``.nnz`` as ``{name: numpy array}``, in the file's order.

    The arrays are the ones ``nnzip decompress`` writes into the rebuilt model file.

    >>> weights = nnzip.load(requests.get(url).content)   # doctest: +SKIP
    """
    with NnzFile(source, limits=limits) as f:
        return {name: f[name] for name in f}


