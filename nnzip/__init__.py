"""nnzip: compress trained neural-network weight files and check they still work.

The public API (the CLI is a thin layer over it)::

    import nnzip
    nnzip.compress("model.h5")                                   # -> model.nnz, lossless
    nnzip.compress("model.h5", budget=nnzip.Budget("val.npz", max_drop=0.005))
    nnzip.decompress("model.nnz", "rebuilt.h5")
    nnzip.inspect("model.nnz")                                   # a JSON-able dict
    nnzip.verify("model.nnz", "test.npz", original="model.h5")
"""

__version__ = "0.1.0"

from .api import Budget, compress, decompress, inspect, verify  # noqa: E402  (api needs __version__)
from .errors import ConfigError, FormatError, InputError, NnzipError  # noqa: E402

__all__ = [
    "Budget", "ConfigError", "FormatError", "InputError", "NnzipError",
    "__version__", "compress", "decompress", "inspect", "verify",
]
