"""The public operations, in one place: compress, decompress, inspect, verify, sweep.

The CLI is a thin layer over these; library users call them directly
(``import nnzip; nnzip.compress("model.h5")``).  This module only re-exports; each job
has its own module:

* write side: :mod:`nnzip.writer` (compress), :mod:`nnzip.encoder` (tensors to header and
  blobs), :mod:`nnzip.budget` (the accuracy-budget search), :mod:`nnzip.workers` (where
  the work runs), :mod:`nnzip.metrics` (the recorded error), :mod:`nnzip.sweep`;
* read side: :mod:`nnzip.reader` (one reader that runs every check of a ``.nnz`` once),
  :mod:`nnzip.header_rules` (§3's rules), :mod:`nnzip.rebuild` (decompress),
  :mod:`nnzip.reports` (inspect's summaries), :mod:`nnzip.verification` (verify);
* :mod:`nnzip.chains` builds and describes stage chains.
"""

from __future__ import annotations

from .budget import Budget, encode_with_budget  # noqa: F401
from .chains import describe_chain  # noqa: F401
from .encoder import TensorJob, TensorReport, encode_job, encode_model, strip_informative, strip_structure, tensor_bytes  # noqa: F401
from .errors import ConfigError, FormatError, NnzipError  # noqa: F401
from .header_rules import blob_sizes  # noqa: F401
from .metrics import ERROR_BLOCK, relative_error  # noqa: F401
from .pipeline import part_blobs  # noqa: F401  (the CLI's per-tensor lines)
from .reader import inspect, read_tensors  # noqa: F401
from .rebuild import decompress, default_decompressed  # noqa: F401
from .sweep import SweepReport  # noqa: F401
from .sweep import run as sweep  # noqa: F401
from .verification import VerifyReport, verify  # noqa: F401
from .workers import Progress, Workers  # noqa: F401
from .writer import NNZ_SUFFIX, CompressReport, compress, default_output  # noqa: F401
