"""Safe output files: written under a temporary name, renamed into place when complete.

A failure part-way leaves no partial file behind, and an existing file is only
replaced when the caller says so (the CLI's ``-f``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from .errors import NnzipError


def check_writable(path: Path, force: bool) -> None:
    """Refuse an existing *path* unless *force*, and a missing parent directory."""
    if path.exists() and not force:
        raise NnzipError(f"{path} already exists (use -f to overwrite)")
    if path.is_dir():
        raise NnzipError(f"{path} is a directory")
    if not path.parent.is_dir():
        raise NnzipError(f"directory {path.parent} does not exist")


@contextlib.contextmanager
def atomic_output(path: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary path beside *path*; on success rename it to *path*, else delete it."""
    check_writable(path, force)
    # Same directory (so the rename is atomic) and same suffix (writers pick formats by it).
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
