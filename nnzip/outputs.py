"""Safe output files: written under a temporary name, renamed into place when complete.

A failure part-way leaves no partial file behind, and an existing file is only
replaced when the caller says so (the CLI's ``-f``).  Because the output's
directory may be shared with someone hostile, and the output name may be one a
``.nnz`` or a user chose carelessly:

- the temporary file is created exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``,
  mode 0600) under an unpredictable name, ``.<name>.nnzip-<random>.tmp<suffix>``,
  in the output's directory (so the rename is atomic) and with the output's
  suffix (some writers, e.g. matplotlib's, pick a format by it); a symlink
  planted at any name is never followed;
- the output is never the input (same device and inode: the same name, a hard
  link or a symlink to it), never a symlink (even a dangling one: it would
  redirect the write) and never anything but a regular file (a device such as
  ``/dev/null``, a FIFO, a socket, a directory) -- ``-f`` replaces regular files
  only; standard output is written as a stream by the CLI's ``-c``/``-o -``, never by
  renaming over ``/dev/stdout``;
- the data is ``fsync``-ed before the rename and the directory after it, so a
  crash leaves either the old file or the complete new one;
- the final mode is what ``gzip`` gives a new file: 0666 less the umask.

Writers take a path (HDF5 resolves it to a real name, so an unnamed Linux
``O_TMPFILE`` file cannot be written through ``/proc/self/fd/N``); a run killed
by SIGKILL can therefore leave one hidden ``.<name>.nnzip-*.tmp*`` file beside
the output, recognisable by that pattern and safe to delete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import NnzipError

#: How many random names to try before giving up (a collision is ~impossible; this bounds a loop).
_ATTEMPTS = 100
#: The marker in temporary names, so that a file a killed run left is recognisable.
TEMP_MARKER = ".nnzip-"


def check_writable(path: Path, force: bool, source: Path | None = None) -> None:
    """Refuse to write *path* unless it is absent, or (with *force*) an existing regular file.

    Also refused: a symlink there (dangling or not), a directory, a device, FIFO or
    socket, a missing parent directory, and -- when *source* is given -- the input
    itself (same device and inode, through any name).
    """
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except ValueError:  # a NUL byte, or a lone surrogate the file system encoding cannot carry
        raise NnzipError(f"output name {os.fspath(path)!r} is not a valid file name") from None
    if source is not None:
        _refuse_same_file(path, Path(source))
    if info is not None:
        _refuse_special(path, info)
        if not force:
            raise NnzipError(f"{path} already exists (use -f to overwrite)")
    if not path.parent.is_dir():
        raise NnzipError(f"directory {path.parent} does not exist")


def _refuse_same_file(path: Path, source: Path) -> None:
    try:
        target, origin = os.stat(path), os.stat(source)
    except OSError:
        return  # the output does not exist (or cannot be reached): it cannot be the input
    if (target.st_dev, target.st_ino) == (origin.st_dev, origin.st_ino):
        raise NnzipError(f"output {path} is the input file {source} (same file): refusing to overwrite it")


def _refuse_special(path: Path, info: os.stat_result) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise NnzipError(f"{path} is a symbolic link: nnzip neither writes through nor replaces links "
                         "(to write to standard output use -c or -o -)")
    if stat.S_ISDIR(info.st_mode):
        raise NnzipError(f"{path} is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise NnzipError(f"{path} is not a regular file (a device, FIFO or socket): nnzip only writes or replaces "
                         "regular files (to write to standard output use -c or -o -)")


def temporary_name(path: Path) -> Path:
    """A fresh unpredictable temporary name beside *path*: ``.<name>.nnzip-<random>.tmp<suffix>``.

    A long *name* is shortened so that the temporary name fits wherever the output's does.
    """
    return path.with_name(f".{path.name[:180]}{TEMP_MARKER}{secrets.token_hex(6)}.tmp{path.suffix[:20]}")


def _create_exclusive(path: Path) -> tuple[Path, int]:
    """Create a new empty temporary file beside *path* that no symlink can redirect; (name, fd)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_ATTEMPTS):
        name = temporary_name(path)
        try:
            return name, os.open(name, flags, 0o600)
        except FileExistsError:
            continue
    raise NnzipError(f"cannot create a temporary file beside {path}: {_ATTEMPTS} names taken")


def _final_mode() -> int:
    """0666 less the process umask, as gzip and ``open(..., 'w')`` give a new file."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_directory(directory: Path) -> None:
    """Make a rename in *directory* durable; filesystems without directory fsync are let be."""
    try:
        handle = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_output(path: Path, force: bool, source: Path | None = None) -> Iterator[Path]:
    """Yield a fresh temporary path beside *path*; on success move it to *path*, else delete it.

    *path* is checked by :func:`check_writable` (with *source*, the input it must not be)
    before and again just before the rename, so a file, link or device that appeared at
    *path* meanwhile is not replaced.  The writer must write the yielded path by name.
    """
    path = Path(path)
    check_writable(path, force, source)
    temporary, handle = _create_exclusive(path)
    ours = os.fstat(handle)
    try:
        yield temporary
        now = os.lstat(temporary)
        if (now.st_dev, now.st_ino) != (ours.st_dev, ours.st_ino):
            raise NnzipError(f"temporary file {temporary} was replaced while writing: not moving it into place")
        os.fchmod(handle, _final_mode())
        os.fsync(handle)
        check_writable(path, force, source)
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    finally:
        os.close(handle)
        _remove_if_ours(temporary, ours)


def _remove_if_ours(temporary: Path, ours: os.stat_result) -> None:
    """Delete *temporary* unless it is gone (renamed into place) or is no longer our file."""
    try:
        now = os.lstat(temporary)
    except FileNotFoundError:
        return
    if (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


@contextlib.contextmanager
def private_directory() -> Iterator[Path]:
    """A fresh mode-0700 directory under the system's temporary directory, removed with its content
    whatever happens: where standard input is spooled and stdout-bound or in-memory outputs are
    written, since the readers seek and the writers need a path."""
    directory = Path(tempfile.mkdtemp(prefix="nnzip-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
