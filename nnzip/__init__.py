"""nnzip: compress trained neural-network weight files and check they still work.

The public API (the CLI is a thin layer over it)::

    import nnzip
    nnzip.compress("model.h5")                                   # -> model.nnz, lossless
    nnzip.compress("model.h5", bits=4, layers=["output:bits=6"]) # the CLI's options as keywords
    nnzip.compress("model.h5", budget={"data": "val.npz", "max_drop": 0.005})
    nnzip.compress({"w": array}, "w.nnz")                        # a dict of numpy arrays
    nnzip.decompress("model.nnz", "rebuilt.h5")                  # or to a binary file object
    weights = nnzip.load("model.nnz")                            # {name: array}; path, bytes or file object
    with nnzip.open("model.nnz") as f:                           # lazy: decodes only what you index
        kernel = f["model_weights/dense/dense/kernel:0"]
    nnzip.inspect("model.nnz")                                   # a JSON-able dict
    nnzip.verify("model.nnz", "test.npz", original="model.h5")

Errors a user can cause are :class:`NnzipError` subclasses: :class:`FormatError` (a bad
``.nnz``, naming the spec rule), :class:`InputError` (a bad model file), :class:`ConfigError`
(a bad setting).
"""

from .version import __version__

from .api import Budget, CompressReport, inspect, verify  # noqa: E402
from .errors import ConfigError, FormatError, InputError, NnzipError  # noqa: E402
from .public import compress, decompress  # noqa: E402
from .reader import NnzFile, load, open  # noqa: E402,A004  (nnzip.open, as gzip.open)

__all__ = [
    "Budget", "CompressReport", "ConfigError", "FormatError", "InputError", "NnzFile", "NnzipError",
    "__version__", "compress", "decompress", "inspect", "load", "open", "verify",
]
