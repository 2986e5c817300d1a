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


class UsageError(ConfigError):
    """Command-line settings that contradict each other or need one another (``--x`` and ``--y`` together).

    A :class:`ConfigError` (the settings are invalid), told apart so that the CLI exits with
    status 2, the usage-error status its ``--help`` lists, as it does for argparse's own errors.

    >>> import io, nnzip
    >>> nnzip.compress("model.h5", io.BytesIO(), lossless=True, bits=4)   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    nnzip.errors.UsageError: --lossless contradicts --bits
    """


class NoSaving(NnzipError):
    """A valid stage setting that would not make this tensor smaller (e.g. an SVD rank too high for its shape).

    Not a :class:`ConfigError`: nothing is wrong with the setting, it just does not pay on
    this tensor, so the callers that choose settings themselves (the budget search, the
    sweep, the fixed-flag fallback to dense storage) catch exactly this and try something
    else, while a real bad parameter still reaches the user as a ConfigError.

    >>> import numpy as np
    >>> from nnzip.pipeline import TensorPlan, encode_tensor
    >>> encode_tensor("w", np.ones((4, 4), np.float32), TensorPlan("svd", {"rank": 3}, []))   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    nnzip.errors.NoSaving: svd: rank 3 stores 27 numbers for a 4x4 matrix of 16; it would not save space
    """


def os_reason(exc: OSError) -> str:
    """The reason of an OSError in words (``No such file or directory``), for a message that names the file itself.

    ``strerror`` is None for OSErrors raised without an errno (some libraries do): their text then.

    >>> os_reason(FileNotFoundError(2, "No such file or directory", "m.h5"))
    'No such file or directory'
    """
    return exc.strerror or str(exc)


def os_error_text(exc: OSError) -> str:
    """An OSError as the one line nnzip prints: its reason, then the file it names, if any.

    >>> os_error_text(PermissionError(13, "Permission denied", "out.nnz"))
    'Permission denied: out.nnz'
    """
    return f"{os_reason(exc)}{': ' + str(exc.filename) if exc.filename else ''}"
