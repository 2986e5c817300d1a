"""The in-memory model: named tensors in file order plus what rebuilds the file.

A :class:`Model` is what a reader in :mod:`nnzip.io` returns and a writer
consumes.  ``structure`` is a JSON-serialisable description of everything in the
source file that is not a tensor value (for HDF5: groups, attributes with their
exact types, dataset names, order and storage layout); it goes into the ``.nnz``
header verbatim, so a file rebuilt from it is the source file but for the tensor
values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
    #: Tensor name (its path inside the source file) -> value, in file order.
    tensors: dict[str, np.ndarray]
    #: Groups left out of ``structure`` and ``tensors`` (optimizer state unless kept).
    dropped: list[DroppedGroup] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Bytes of all tensor values stored densely."""
        return sum(int(t.nbytes) for t in self.tensors.values())
