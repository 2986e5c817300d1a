"""Declared limits on what decoding a ``.nnz`` may cost (spec/container.md, rule 4.7 and §4.3).

A hostile file of a few hundred bytes must not make nnzip allocate gigabytes or compute for
minutes.  Every reader check that bounds memory or arithmetic takes its numbers from one
:class:`DecodeLimits` object, so that the command line (``--max-output``) can raise them in
one place, and so that the writer can apply the very same caps to what it writes.
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


@dataclass(frozen=True)
class DecodeLimits:
    """Caps a reader applies before it allocates or computes what a header names.

    ``max_output`` (bytes of decoded tensors, summed over the file) replaces rule 4.7's
    default when set: the user's ``--max-output SIZE``.  The writer checks what it writes
    against the same object, so ``compress`` never writes a file ``decompress`` refuses
    under the same limits.
    """

    max_output: int | None = None

    def output_cap(self, file_size: int) -> int:
        """The largest total of decoded tensor bytes a file of *file_size* bytes may name."""
        if self.max_output is not None:
            return self.max_output
        return max(DEFAULT_MIN_OUTPUT, DEFAULT_OUTPUT_PER_FILE_BYTE * file_size)


#: The limits in force when the caller names none.
DEFAULT_LIMITS = DecodeLimits()
