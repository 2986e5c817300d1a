"""Spread the tensors of one compress or decompress over a dask cluster (``--scheduler ADDRESS``).

For checkpoints that outgrow one machine nnzip hands its per-tensor jobs to an existing engine,
``dask.distributed`` (the optional extra ``nnzip[dask]``), rather than a pool of its own.  The
file written is byte for byte the one a local run writes: each tensor is encoded (or decoded) by
the same function, the client collects the results in tensor order and writes them itself.

What travels between the client and the workers (docs: README "More than one machine"):

* **to a worker**: small plain data -- an :class:`nnzip.encoder.TensorJob` (the tensor's name and
  settings) and where its bytes are.  A safetensors file or sharded checkpoint is *not* sent:
  the worker reads its tensor itself, by offset, from the same path on a file system every
  worker shares (:class:`FileSlice`); it first checks the file is the one the client read (same
  size, same SHA-256 of the safetensors header), else the run stops with a one-line error.
  Formats nnzip cannot read by offset (HDF5, zip, ONNX) are read by the client and each tensor
  is scattered to a worker.  Decompress sends the ``.nnz``'s place and blob table
  (:class:`NnzFile`); the worker reads and CRC-checks the blobs of its tensor.
* **back**: the encoded tensor (its header entry and blobs) and its report, or the decoded
  array.  At most :attr:`Cluster.window` tensors are in flight, so the client holds about one
  result at a time and the workers a bounded number.

Serialization: dask moves these objects with its own serialization (pickle protocol 5 with
out-of-band numpy buffers).  They are nnzip's own dataclasses, dicts, bytes and arrays, made by
this client or by workers it was pointed at; nothing a model file or a ``.nnz`` holds is ever
unpickled -- those bytes are parsed by nnzip's checked readers, on the client and again on the
worker.  nnzip itself imports no pickle module.  Like any dask client, this trusts the cluster:
whoever can reach the scheduler can run code on its workers, so run it on a trusted network
(dask's own security advice, TLS addresses included).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, FormatError, InputError, NnzipError, os_reason

#: Seconds to wait for the scheduler (and for its first worker) before giving up.
DEFAULT_TIMEOUT = 10.0
#: Longest scheduler address accepted (a URL; dask's own are ~30 characters).
MAX_ADDRESS_CHARS = 1000
_INSTALL = "install nnzip[dask] (pip install 'nnzip[dask]')"
_SHARED = "--scheduler needs the input on a file system every worker shares, under the same path"


@dataclass(frozen=True)
class Scheduler:
    """Where the dask scheduler listens (``tcp://host:port``) and how long to wait for it."""

    address: str
    timeout: float = DEFAULT_TIMEOUT


def _distributed():
    """The ``distributed`` package, or a one-line error saying which extra to install."""
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"--scheduler runs on a dask cluster: {_INSTALL}") from None
    return distributed


@contextlib.contextmanager
def connect(scheduler: Scheduler):
    """The :class:`Cluster` at *scheduler* (:func:`nnzip.workers.workers` makes it a pool's tensor executor).

    Connecting and waiting for a first worker are bounded by the scheduler's timeout; either
    failing is a one-line :class:`NnzipError`.  The client is closed on the way out, which
    releases whatever is still in flight.
    """
    distributed = _distributed()
    client = _connect(distributed, scheduler)
    try:
        yield Cluster(client, distributed)
    finally:
        with contextlib.suppress(Exception):  # a scheduler gone away must not hide the first error
            client.close(timeout=scheduler.timeout)


def _connect(distributed, scheduler: Scheduler):
    """A client of *scheduler* with at least one worker, within its timeout."""
    where = f"the dask scheduler at {scheduler.address}"
    check_address(scheduler.address)
    try:
        client = distributed.Client(scheduler.address, timeout=scheduler.timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:  # refused, unresolvable, or no answer in time
        raise NnzipError(f"cannot reach {where} within {scheduler.timeout:g} s ({_reason(exc)}); "
                         f"--scheduler-timeout SECONDS waits longer") from None
    try:
        client.wait_for_workers(1, timeout=scheduler.timeout)
    except (OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            client.close()
        raise NnzipError(f"{where} has no worker after {scheduler.timeout:g} s ({_reason(exc)})") from None
    return client


def check_address(address: str) -> None:
    """A ConfigError unless dask is installed and *address* names a known network protocol, a host and a port 1-65535.

    Checked when the options are parsed, before any input is read, and before any Client
    exists: dask keeps a half-made one, which closes itself at exit with a traceback after a
    timeout.  Nothing is contacted here.
    """
    _distributed()
    from distributed.comm import registry
    from distributed.comm.addressing import get_address_host_port, parse_address

    try:
        scheme = parse_address(address)[0]
        registry.get_backend(scheme)  # e.g. ftp:// is no dask protocol
        host, port = get_address_host_port(address)  # also refuses inproc://, which only a process's own threads reach
        if not (host and 0 < port < 65536):
            raise ValueError("it needs a host and a port from 1 to 65535")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--scheduler {address!r} is not a dask scheduler address: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """An exception as a short single line (dask's messages can hold newlines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


class Cluster:
    """The client side of a dask run: submits tensor jobs and turns cluster failures into one-line errors.

    It stands in for :class:`concurrent.futures.Executor` in :class:`nnzip.workers.Workers`
    (``submit`` -> an object with ``result()``) and says what each job sends
    (:meth:`encoding`, :meth:`decoding`).
    """

    def __init__(self, client, distributed):
        self.client, self._distributed = client, distributed
        threads = sum(client.nthreads().values())
        #: Tensors in flight: two per worker thread, so that each has its next job while the
        #: client collects a result; results wait on the workers until collected, in order.
        self.window = max(2, 2 * threads)

    def submit(self, function, *args) -> _Result:
        """Run ``function(*args)`` on some worker (never deduplicated: ``pure=False``)."""
        return _Result(self.client.submit(function, *args, pure=False), self._distributed)

    def encoding(self, model, source: Path | None, jobs: Iterable, encode: Callable) -> tuple:
        """``(function, items)`` for :func:`nnzip.encoder.encode_model`: each item an (encode, job, where its tensor is) triple.

        Tensors of a safetensors file or sharded checkpoint are read by the worker
        (:class:`FileSlice`); others are read here and scattered to a worker.  *encode* is
        :func:`nnzip.encoder.encode_job`, handed in (dask sends a module-level function by
        name) so that this transport layer never imports the encoder above it.
        """
        slices = tensor_slices(model, source) if source is not None else {}

        def items():
            for job in jobs:
                where = slices.get(job.name)
                if where is None:
                    where = self.client.scatter(np.asarray(model.tensors[job.name]), hash=False)
                yield encode, job, where

        return encode_remote, items()

    def decoding(self, source: Path, container) -> tuple:
        """``(function, blob reader, blob table)`` for :func:`nnzip.api.decompress`'s decode-ahead.

        The blob table goes to every worker once; each task carries only its header entry.
        """
        where = NnzFile.of(source, container)
        table = [(entry["offset"], entry["size"], entry["crc32"]) for entry in container.header["blobs"]]
        # one object (scattering the list itself would make a key per blob)
        return decode_remote, where, self.client.scatter([table], broadcast=True, hash=False)[0]


class _Result:
    """A dask future whose ``result()`` raises nnzip's one-line errors for cluster failures."""

    def __init__(self, future, distributed):
        self._future, self._distributed = future, distributed

    def result(self):
        """The task's value; its own NnzipError as it is; a lost worker or connection as an NnzipError."""
        try:
            return self._future.result()
        except NnzipError:
            raise
        except (self._distributed.KilledWorker, CancelledError, OSError) as exc:  # a worker died, the client was closed, a lost connection
            raise NnzipError(f"the dask cluster failed: {type(exc).__name__}: {_reason(exc)}") from None


# --- compress: where each tensor is ------------------------------------------------------------------


@dataclass(frozen=True)
class FileSlice:
    """One tensor's bytes in a safetensors file, as a worker reads them: checked file, offset, dtype, shape."""

    path: str
    #: The file's size and the SHA-256 of its first *checked* bytes (preamble and header) as the client read them.
    size: int
    checked: int
    digest: str
    offset: int
    dtype: str
    shape: tuple[int, ...]

    def load(self) -> np.ndarray:
        """The tensor, read from the shared file after checking it is the file the client read."""
        try:
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                head = handle.read(self.checked)
                if size != self.size or hashlib.sha256(head).hexdigest() != self.digest:
                    raise InputError(f"{_worker()} finds {self.path} is not the file the client read "
                                     f"({_difference(size, self.size)}); {_SHARED}")
                value = np.empty(self.shape, dtype=np.dtype(self.dtype))
                handle.seek(self.offset)
                if handle.readinto(value.reshape(-1).view(np.uint8)) != value.nbytes:
                    raise InputError(f"{_worker()} finds {self.path} ends inside a tensor; {_SHARED}")
        except OSError as exc:
            raise InputError(f"{_worker()} cannot open {self.path}: {os_reason(exc)}; {_SHARED}") from None
        return value


def tensor_slices(model, source: Path) -> dict[str, FileSlice]:
    """Tensor name -> :class:`FileSlice` for a safetensors file or sharded checkpoint; empty for other formats."""
    from .formats import safetensors, sharded

    if model.source_format == safetensors.FORMAT_ID:
        return _safetensors_slices(Path(source), model.structure)
    if model.source_format == sharded.FORMAT_ID:
        folder = sharded.find_index(Path(source)).parent
        slices: dict[str, FileSlice] = {}
        for shard in model.structure["shards"]:
            slices.update(_safetensors_slices(folder / shard["file"], shard["structure"]))
        return slices
    return {}


def _safetensors_slices(path: Path, structure: dict) -> dict[str, FileSlice]:
    """Each tensor's slice of one (already read and checked) safetensors file, from its structure."""
    from .formats import safetensors

    text = (structure.get("header") or safetensors.canonical_header(structure["metadata"], structure["tensors"])).encode("utf-8")
    expected = struct.pack("<Q", len(text)) + text
    absolute = os.path.abspath(path)  # a worker's working directory is not the client's
    with open(absolute, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if handle.read(len(expected)) != expected:
            raise InputError(f"{absolute} changed while it was being read")
    digest, slices, offset = hashlib.sha256(expected).hexdigest(), {}, len(expected)
    for item in structure["tensors"]:  # data order = header order (checked when the file was read, rule 8.19)
        slices[item["name"]] = FileSlice(absolute, size, len(expected), digest, offset, safetensors.DTYPES[item["dtype"]], tuple(item["shape"]))
        offset += safetensors.tensor_nbytes(item)
    return slices


def encode_remote(item: tuple) -> tuple:
    """Worker side of compress: read the tensor (or take the scattered one) and run :func:`nnzip.encoder.encode_job`.

    *item* is ``(encode_job, job, where)``; dask has replaced a scattered tensor's future by its array.
    """
    encode_job, job, where = item
    array = where.load() if isinstance(where, FileSlice) else where
    return encode_job(job, array)


# --- decompress: where each blob is ------------------------------------------------------------------


@dataclass(frozen=True)
class NnzFile:
    """A ``.nnz`` as a worker reads its blobs: path, size, the SHA-256 of its preamble and header, data start."""

    path: str
    size: int
    data_start: int
    digest: str

    @classmethod
    def of(cls, source: Path, container) -> NnzFile:
        """The open (checked) *container* at *source*, described for the workers."""
        absolute = os.path.abspath(source)
        return cls(absolute, container.file_size, container.data_start, _head_digest(absolute, container.data_start))

    def reader(self, table: list[tuple[int, int, int]]):
        """``blob(index) -> bytes`` over the shared file, after checking it is the client's file."""
        from .container import crc32

        try:
            handle = open(self.path, "rb")
        except OSError as exc:
            raise InputError(f"{_worker()} cannot open {self.path}: {os_reason(exc)}; {_SHARED}") from None
        size = os.fstat(handle.fileno()).st_size
        if size != self.size or _head_digest(handle, self.data_start) != self.digest:
            handle.close()
            raise InputError(f"{_worker()} finds {self.path} is not the file the client read ({_difference(size, self.size)}); {_SHARED}")

        def blob(index: int) -> bytes:
            offset, length, crc = table[index]
            handle.seek(self.data_start + offset)
            data = handle.read(length)
            if len(data) != length:  # the same rules the client's reader applies (container.Container.blob)
                raise FormatError(f"rule 6.11: blob {index} is truncated")
            if crc32(data) != crc:
                raise FormatError(f"rule 6.13: blob {index} is corrupt (CRC-32 mismatch)")
            return data

        return handle, blob


def _head_digest(file, length: int) -> str:
    """SHA-256 of a file's first *length* bytes (*file*: a path or an open binary handle)."""
    with contextlib.ExitStack() as stack:
        handle = stack.enter_context(open(file, "rb")) if isinstance(file, (str, os.PathLike)) else file
        handle.seek(0)
        return hashlib.sha256(handle.read(length)).hexdigest()


def decode_remote(entry: dict, where: NnzFile, table: list, limits, executor=None):
    """Worker side of decompress: :func:`nnzip.pipeline.decode_tensor` over the shared ``.nnz``'s blobs.

    The entry is checked again here (rules of §4, within the client's *limits*), as the
    client's own reader would; *executor* is not used (a worker's threads run other tensors).
    """
    from .pipeline import decode_tensor

    handle, blob = where.reader(table)
    with handle:
        return decode_tensor(entry, blob, [size for _, size, _ in table], limits)


def _difference(size: int, expected: int) -> str:
    """How a worker's file differs from the client's: its size, else its header."""
    return f"{size:,} bytes, the client read {expected:,}" if size != expected else "another header than the client read"


def _worker() -> str:
    """'dask worker tcp://...' inside a task, for messages that say where a read failed."""
    try:
        from distributed import get_worker

        return f"dask worker {get_worker().address}"
    except (ImportError, ValueError):
        return "a dask worker"
