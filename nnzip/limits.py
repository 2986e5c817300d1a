"""Declared limits on what decoding a ``.nnz`` may cost (spec/container.md, rule 4.7 and §4.3).

A hostile file of a few hundred bytes must not make nnzip allocate gigabytes or compute for
minutes.  Every reader check that bounds memory or arithmetic takes its numbers from one
:class:`DecodeLimits` object, so that the command line (``--max-output``) can raise them in
one place, and so that the writer can apply the very same caps to what it writes.

The defaults of rules 4.8.1 and 4.8.2 are chosen so that, with rule 4.7's cap on the
decoded tensors, no file under 1 MB makes nnzip use more than about 1 GB of memory or 10 s
of CPU (measured in ``tests/test_decode_limits.py``):

* working memory: a tensor's decode may use, beyond its own output, at most the larger
  of :data:`DEFAULT_MIN_WORK` and :data:`DEFAULT_WORK_PER_OUTPUT_BYTE` x its output bytes;
  so for a small file the peak is at most about 256 MiB of held tensors plus 512 MiB of
  one tensor's temporaries, while a large dense (lossless) tensor still decodes;
* arithmetic: a file's decode may cost at most the larger of :data:`DEFAULT_MIN_OPS` and
  :data:`DEFAULT_OPS_PER_DATA_BYTE` x its blob bytes operations (one operation is one
  float64 multiply-add of a matrix product, 0.07 to 0.15 ns of CPU time measured here;
  2**35 of them 2.5 to 5 s).  Scaling with the stored bytes lets a large low-rank model
  decode: its factors take about ``r (m + n)`` stored numbers for ``m n r`` operations.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20

#: Rule 4.7 by default: the tensors of a file may decode to at most the larger of these two.
#: So a file under 1 MiB decodes to at most 256 MiB of tensors, which keeps a decode well
#: inside 1 GB even with its working buffers; nnzip's own files stay below a ratio of 100,
#: and a legitimate file beyond 256 (all zeros, say) needs ``--max-output``.
DEFAULT_MIN_OUTPUT = 256 * MiB
DEFAULT_OUTPUT_PER_FILE_BYTE = 256

#: Rule 4.8.1 by default: one tensor's decode may use at most the larger of these beyond its output.
DEFAULT_MIN_WORK = 256 * MiB
DEFAULT_WORK_PER_OUTPUT_BYTE = 2
#: Rule 4.8.2 by default: a file's decode may cost at most the larger of these operations.
DEFAULT_MIN_OPS = 1 << 35
DEFAULT_OPS_PER_DATA_BYTE = 1 << 15


@dataclass(frozen=True)
class DecodeLimits:
    """Caps a reader applies before it allocates or computes what a header names.

    ``max_output`` (bytes of decoded tensors, summed over the file) replaces rule 4.7's
    default when set: the user's ``--max-output SIZE``.  ``max_work`` (bytes of working
    memory one tensor's decode may use beyond its output, rule 4.8.1) and ``max_ops``
    (operations a whole file's decode may cost, rule 4.8.2) replace those rules' defaults.
    The writer checks what it writes against the same object, so ``compress`` never writes a
    file ``decompress`` refuses under the same limits.
    """

    max_output: int | None = None
    max_work: int | None = None
    max_ops: int | None = None

    def output_cap(self, file_size: int) -> int:
        """The largest total of decoded tensor bytes a file of *file_size* bytes may name."""
        if self.max_output is not None:
            return self.max_output
        return max(DEFAULT_MIN_OUTPUT, DEFAULT_OUTPUT_PER_FILE_BYTE * file_size)

    def work_cap(self, output_bytes: int) -> int:
        """Rule 4.8.1: the working memory one tensor of *output_bytes* decoded bytes may use."""
        if self.max_work is not None:
            return self.max_work
        return max(DEFAULT_MIN_WORK, DEFAULT_WORK_PER_OUTPUT_BYTE * output_bytes)

    def ops_cap(self, data_bytes: int) -> int:
        """Rule 4.8.2: the operations decoding a file whose blobs total *data_bytes* may cost."""
        if self.max_ops is not None:
            return self.max_ops
        return max(DEFAULT_MIN_OPS, DEFAULT_OPS_PER_DATA_BYTE * data_bytes)


#: The limits in force when the caller names none.
DEFAULT_LIMITS = DecodeLimits()
