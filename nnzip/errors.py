"""Exceptions nnzip raises on purpose.

Every error a user can cause (bad input file, corrupt container, bad flag) is an
:class:`NnzipError`; the CLI prints its message on one line and exits non-zero.
Anything else escaping is a bug.
"""


class NnzipError(Exception):
    """Base class of the errors nnzip reports to the user as one line."""


class FormatError(NnzipError):
    """A `.nnz` container, or a stage's stored bytes or configuration, is invalid.

    Raised by readers and decoders before they allocate memory a bad file names.
    """


class InputError(NnzipError):
    """The input model file cannot be read (not HDF5, not Keras, unsupported layout)."""


class ConfigError(NnzipError):
    """A stage chain, a plan or a command-line setting is invalid."""
