"""Read a ``.nnz``: :class:`NnzReader` (the one reader), :func:`open` (a lazy mapping over it) and :func:`load`.

Every read path (``decompress``, ``inspect``, ``verify``, ``nnzip.open``, the CLI) opens
the file through :class:`NnzReader`, which runs every check of spec/container.md once, when
the file is opened: the container's own rules (§2, §6: preamble, header CRC and JSON, blob
table, :mod:`nnzip.container`), the header's (§3 and rule 4.7's cap, :mod:`nnzip.header_rules`),
each tensor entry's (§4, :func:`nnzip.pipeline.check_tensor_entry`) and the source format's
structure (§5).  It keeps each entry checked and decodes from that, never checking it again;
each blob's CRC-32 is checked when it is read.

For deployment code: no rebuilt model file, and a ``.nnz`` fetched over the network need
not touch the disk (pass its bytes or a binary file object)::

    import nnzip
    with nnzip.open("model.nnz") as f:           # or nnzip.open(data_bytes), nnzip.open(response)
        print(f.source_format, list(f))         # checks the whole header, reads no blob yet
        kernel = f["model_weights/dense/dense/kernel:0"]   # reads and decodes only that tensor's blobs
    weights = nnzip.load("model.nnz")           # {name: numpy array}, every tensor
"""

from __future__ import annotations

import io as _io
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor
from typing import BinaryIO, Union

import numpy as np

from .container import Container, open_container, read_container
from .errors import FormatError
from .header_rules import blob_sizes, check_header, decoded_bytes
from .limits import DEFAULT_LIMITS, DecodeLimits
from .pipeline import CheckedTensor, decode_checked
from .reports import summary

#: What :class:`NnzReader`, :func:`open` and :func:`load` read: a path, the file's bytes, or a binary file object.
Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]
#: A file object that cannot seek (a socket, an HTTP response) is read into memory, at most this much.
MAX_UNSEEKABLE_BYTES = 2**34
#: The name a reader of bytes or a file object goes by (in ``inspect``'s ``file``).
STREAM_NAME = "<stream>"


class NnzReader:
    """One opened, fully checked ``.nnz``: its header, its checked tensor entries, and their tensors on demand.

    Opening runs every rule of spec/container.md (§2-§6, within *limits*) and raises
    :class:`nnzip.FormatError` naming the first one broken; nothing is decoded yet.
    :meth:`tensor` then decodes one tensor from its checked entry, reading its own blobs only.
    Safe to decode from several threads at once (the container serialises its reads).

    >>> import io, numpy as np, nnzip
    >>> from nnzip.reader import NnzReader
    >>> out = io.BytesIO()
    >>> _ = nnzip.compress({"w": np.ones(3, np.float32)}, out)
    >>> with NnzReader(out.getvalue()) as reader:
    ...     reader.source_format, list(reader), reader.tensor("w").tolist()
    ('npz', ['w'], [1.0, 1.0, 1.0])
    """

    def __init__(self, source: Source, *, limits: DecodeLimits = DEFAULT_LIMITS):
        self.limits = limits
        #: The path it was opened from, or None for bytes and file objects.
        self.path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        #: The file's name as reports give it: the path, or :data:`STREAM_NAME`.
        self.name = self.path if self.path is not None else STREAM_NAME
        self._container: Container | None = None
        self._container, self._owned = _open(source)
        try:
            header = self._container.header
            checked = check_header(header, self._container.file_size, limits)
        except BaseException:
            self.close()
            raise
        self._entries = {entry["name"]: entry for entry in header["tensors"]}
        self._checked = {entry["name"]: item for entry, item in zip(header["tensors"], checked)}
        self.blob_sizes = blob_sizes(header)

    # --- what the header says -----------------------------------------------------------

    @property
    def container(self) -> Container:
        """The open container (its blob table, data section's place, version); ValueError once closed."""
        if self._container is None:
            raise ValueError("I/O operation on a closed nnzip file")
        return self._container

    @property
    def header(self) -> dict:
        """The checked header (spec/container.md §3): source, structure, tensors, blob table, plan."""
        return self.container.header

    @property
    def source_format(self) -> str:
        """The source format the ``.nnz`` was made from: ``keras-h5``, ``safetensors``, ``npz`` …"""
        return self.header["source"]["format"]

    def entry(self, name: str) -> dict:
        """The header entry of tensor *name*: dtype, shape, stage chain, parts; KeyError when there is none."""
        return self._entries[name]

    def checked(self, name: str) -> CheckedTensor:
        """Tensor *name*'s entry as the reader checked it when the file was opened."""
        return self._checked[name]

    def decoded_bytes(self, name: str | None = None) -> int:
        """The bytes tensor *name* decodes to, or with None, all the tensors together."""
        entries = self._entries.values() if name is None else [self._entries[name]]
        return sum(map(decoded_bytes, entries))

    # --- the data -----------------------------------------------------------------------

    def blob(self, index: int) -> bytes:
        """The bytes of blob *index*, its CRC-32 checked (rule 6.13)."""
        return self.container.blob(index)

    def tensor(self, name: str, executor: Executor | None = None) -> np.ndarray:
        """Decode tensor *name* from its checked entry, reading its own blobs only (chunks on *executor*)."""
        checked = self._checked[name]
        return decode_checked(checked, self.container.blob, executor)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    # --- life cycle ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._container is None

    def close(self) -> None:
        """Release the file (a caller's file object is left open: it is the caller's)."""
        if self._container is not None and self._owned:
            self._container.close()
        self._container = None

    def __enter__(self) -> "NnzReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_tensors(source: Source, limits: DecodeLimits = DEFAULT_LIMITS) -> tuple[dict, dict[str, np.ndarray]]:
    """Decode every tensor of a ``.nnz`` within *limits*; returns (header, name -> array)."""
    with NnzReader(source, limits=limits) as reader:
        return reader.header, {name: reader.tensor(name) for name in reader}


def inspect(path: str | os.PathLike, limits: DecodeLimits = DEFAULT_LIMITS) -> dict:
    """A JSON-able summary of a ``.nnz``: source, sizes, and per tensor chain, bytes, bits per weight, error.

    Every blob is read (its CRC checked, as ``gzip -t`` does) and its bytes stage undone
    to report the Shannon bound of what was coded next to the bytes it takes
    (:func:`nnzip.reports.summary`).  A tensor the budget search changed by bias correction
    has ``bias_correction`` (the weight it offsets), else None.

    >>> import nnzip, numpy as np
    >>> _ = nnzip.compress({"w": np.zeros((64, 64), np.float32)}, "w.nnz")
    >>> info = nnzip.inspect("w.nnz")
    >>> info["source_format"], info["ratio"] > 1
    ('npz', True)
    >>> [t["method"] for t in info["tensors"]]
    ['byteplanes']
    """
    with NnzReader(path, limits=limits) as reader:
        return summary(reader)


class NnzFile(Mapping):
    """A read-only mapping ``tensor name -> numpy array`` over one ``.nnz`` (use :func:`open`).

    A thin binding over :class:`NnzReader`: indexing decodes that tensor only, reading only
    its own blobs; nothing is cached, so holding the mapping costs the header, not the weights.

    >>> import nnzip, numpy as np, io
    >>> out = io.BytesIO()
    >>> _ = nnzip.compress({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, out)
    >>> with nnzip.open(out.getvalue()) as f:
    ...     f.source_format, list(f), f["w"].shape
    ('npz', ['w'], (2, 3))
    """

    def __init__(self, source: Source, *, limits: DecodeLimits = DEFAULT_LIMITS):
        self._reader = NnzReader(source, limits=limits)

    # --- the mapping --------------------------------------------------------------------

    def __getitem__(self, name: str) -> np.ndarray:
        """Decode tensor *name* (its blobs only, CRCs checked); KeyError when the file has no such tensor."""
        self._reader.entry(name)  # KeyError before the closed-file error, as a Mapping does
        return self._reader.tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._reader)

    def __len__(self) -> int:
        return len(self._reader)

    def __contains__(self, name: object) -> bool:
        return name in self._reader

    # --- what the header says -----------------------------------------------------------

    @property
    def reader(self) -> NnzReader:
        """The :class:`NnzReader` underneath."""
        return self._reader

    @property
    def header(self) -> dict:
        """The checked header (spec/container.md §3): source, structure, tensors, blob table, plan."""
        return self._reader.header

    @property
    def source_format(self) -> str:
        """The source format the ``.nnz`` was made from: ``keras-h5``, ``safetensors``, ``npz`` …"""
        return self._reader.source_format

    def entry(self, name: str) -> dict:
        """The header entry of tensor *name*: dtype, shape, stage chain, parts."""
        return self._reader.entry(name)

    def inspect(self) -> dict:
        """The same summary as :func:`nnzip.inspect` (reads every blob to check its CRC)."""
        return summary(self._reader)

    # --- life cycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Release the file (a caller's file object is left open: it is the caller's)."""
        self._reader.close()

    def __enter__(self) -> "NnzFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        reader = self._reader
        return f"<nnzip.NnzFile {reader.name!r}: {len(self)} tensors, source {'closed' if reader.closed else reader.source_format}>"


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
    with NnzReader(source, limits=limits) as reader:
        return {name: reader.tensor(name) for name in reader}
