"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A crash or an interrupt in the middle of a write therefore never leaves a half-written file
under the final name.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "atomic_dir", "umask", "reserve_space", "DiskSpaceError",
           "open_npy_for_writing"]


def umask() -> int:
    """The process umask, read without changing it where possible (``os.umask`` is racy)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600; give the final file the permissions a plain open() would (umask)
    os.chmod(tmp, 0o666 & ~umask())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` as a whole.

    An existing ``path`` is only removed after the new directory is complete.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp creates 0700; a plain mkdir would honour the umask
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class DiskSpaceError(OSError):
    """An ``OSError`` (``errno`` kept) whose message is the sentence alone, without ``[Errno n]``."""

    def __str__(self) -> str:
        return str(self.strerror)


def reserve_space(path: str | os.PathLike, size: int, what: str | None = None) -> None:
    """Allocate ``size`` bytes of the file ``path`` on disk now (``posix_fallocate``; where the file
    system cannot, by writing zeros), so that a full disk is an ``OSError`` here, naming the folder,
    and never a ``SIGBUS`` later when a memory map of the file is written to (a sparse file's pages
    get their disk blocks only when first touched)."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            block = b"\0" * (1 << 22)            # no fallocate here: write the blocks for real
            os.lseek(fd, 0, os.SEEK_SET)
            left = size
            while left > 0:
                left -= os.write(fd, block[:min(left, len(block))])
    except OSError as e:
        # name the folder the user gave (an atomic_dir's temporary folder inside it is removed)
        where = path.parent.parent if path.parent.name.startswith(".") and path.parent.name.endswith(".tmp") \
            else path.parent
        raise DiskSpaceError(e.errno, f"not enough space in {where} for {what or path.name} ({size:,} bytes): "
                                      f"{e.strerror or e}; free space there or write elsewhere") from None
    finally:
        os.close(fd)


def open_npy_for_writing(path: str | os.PathLike, shape: tuple, dtype="float32"):
    """``numpy.lib.format.open_memmap(path, "w+")`` with its disk space reserved first
    (:func:`reserve_space`): a full disk is an ``OSError`` naming the folder, not a ``SIGBUS``."""
    import numpy as np

    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        size = os.path.getsize(path)
        reserve_space(path, size, what=Path(path).name)
    except BaseException:
        del mm
        raise
    return mm
