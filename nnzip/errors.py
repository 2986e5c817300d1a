"""Exceptions nnzip raises on purpose.

Every error a user can cause (bad input file, corrupt container, bad flag) is an
:class:`NnzipError`; the CLI prints its message on one line and exits non-zero.
Anything else escaping is a bug.
"""


class NnzipError(Exception):
    """Base class of the errors nnzip reports to the user as one line.

    >>> import nnzip
    >>> try:
    ...     nnzip.load(b"not a .nnz file")
    ... except nnzip.NnzipError as exc:
    ...     print(type(exc).__name__)
    FormatError
    """


class FormatError(NnzipError):
    """A `.nnz` container, or a stage's stored bytes or configuration, is invalid.

    Raised by readers and decoders before they allocate memory a bad file names; the
    message names the spec rule broken.

    >>> import nnzip
    >>> nnzip.load(b"NNZ")                       # doctest: +ELLIPSIS
    Traceback (most recent call last):
    nnzip.errors.FormatError: rule ...
    """


class InputError(NnzipError):
    """The input model file cannot be read (not HDF5, not Keras, unsupported layout).

    >>> import io, nnzip
    >>> nnzip.compress("/dev/null", io.BytesIO())   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    nnzip.errors.InputError: ...
    """


class ConfigError(NnzipError):
    """A stage chain, a plan or a command-line setting is invalid.

    >>> import io, numpy as np, nnzip
    >>> nnzip.compress({"w": np.ones((64, 64), np.float32)}, io.BytesIO(), bits=9)   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    nnzip.errors.ConfigError: ...
    """
