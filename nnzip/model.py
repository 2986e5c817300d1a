"""The in-memory model: named tensors in file order plus what rebuilds the file.

A :class:`Model` is what a reader in :mod:`nnzip.formats` returns and a writer
consumes.  ``structure`` is a JSON-serialisable description of everything in the
source file that is not a tensor value (for HDF5: groups, attributes with their
exact types, dataset names, order and storage layout); it goes into the ``.nnz``
header verbatim, so a file rebuilt from it is the source file but for the tensor
values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np


class LazyTensors(Mapping):
    """Tensor name -> value, each read from the source file when asked for and not kept.

    What streaming compression reads a model through (spec/container.md §4.4, "bounded
    memory"): only the tensor being encoded is in memory.  Each access reads the tensor
    again, so callers that need one several times keep it themselves.
    """

    def __init__(self, specs: dict[str, tuple[np.dtype, tuple[int, ...]]], load: Callable[[str], np.ndarray]):
        self._specs, self._load = specs, load

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._specs:
            raise KeyError(name)
        return self._load(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    @property
    def nbytes(self) -> int:
        """Bytes of all values, from their declared dtypes and shapes (nothing is read)."""
        return sum(map(self.nbytes_of, self._specs))

    def nbytes_of(self, name: str) -> int:
        """Bytes of one value, from its declared dtype and shape (nothing is read)."""
        dtype, shape = self._specs[name]
        return int(np.dtype(dtype).itemsize * np.prod(shape, dtype=np.int64))


@dataclass
class DroppedGroup:
    """A part of the source file left out on purpose (optimizer state)."""

    path: str
    tensors: int
    nbytes: int

    def to_json(self) -> dict:
        """The record as stored in the header's ``source.dropped`` list."""
        return {"path": self.path, "tensors": self.tensors, "bytes": self.nbytes}


@dataclass
class Model:
    """Tensors in file order and the structure needed to write the source format again."""

    #: Source format id, e.g. ``"keras-h5"`` or ``"keras-weights-h5"`` (see spec/container.md §5).
    source_format: str
    #: JSON-serialisable description of the file without tensor values.
    structure: dict
    #: Tensor name (its path inside the source file) -> value, in file order (a :class:`LazyTensors` when read lazily).
    tensors: dict[str, np.ndarray] | LazyTensors
    #: Groups left out of ``structure`` and ``tensors`` (optimizer state unless kept).
    dropped: list[DroppedGroup] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Bytes of all tensor values stored densely."""
        if isinstance(self.tensors, LazyTensors):
            return self.tensors.nbytes
        return sum(int(t.nbytes) for t in self.tensors.values())
