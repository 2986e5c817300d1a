"""Measure the header of ``.nnz`` files: stored bytes, share of the file, and what each member costs.

Usage: ``python benchmarks/header_size.py FILE.nnz ...`` prints, per file, the file and stored
header bytes, the header's share, the JSON's length, and for the largest members of
``source.structure`` (and the top-level members) how many stored bytes the header would lose
without them (encoded as the file's version encodes headers: 1.2 compact with dictionary 2,
else full with dictionary 1), which is what each one costs.
"""

from __future__ import annotations

import json
import sys

from nnzip.container import encode_header, open_container


def _stored(header: dict, dictionary: int) -> int:
    return len(encode_header(header, True, dictionary)[0])


def _without(header: dict, path: tuple) -> dict:
    """A copy of *header* with the member at *path* removed."""
    copy = json.loads(json.dumps(header))
    node = copy
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return copy


def report(path: str) -> None:
    """Print the header figures of one file."""
    with open_container(path) as container:
        header, stored, size = container.header, container.header_stored_size, container.file_size
        dictionary = 2 if container.version >= (1, 2) else 1
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    full = _stored(header, dictionary)
    print(f"{path}: file {size:,} B, header {stored:,} B stored ({100 * stored / size:.1f}%), JSON {len(text):,} B")
    for key in ("writer", "plan", "tensors", "blobs", "source"):
        if key in header:
            print(f"    {key:<10} {full - _stored(_without(header, (key,)), dictionary):6,} B")
    for key in header["source"]:
        print(f"    source.{key:<14} {full - _stored(_without(header, ('source', key)), dictionary):6,} B")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        report(name)
