"""An unnamed temporary file a load sets bytes aside in while its rows stream, instead of holding them in memory."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from typing import IO

__all__ = ["SpillFile"]


class SpillFile:
    """Bytes appended, then read back; the file is gone with the process, even a killed one. A full disk fails the
    append that meets it, whose bytes are cut off again, and every later append declines."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._file: IO[bytes] | None = None
        self.size = 0
        self.full = False

    def append(self, pieces: Iterable[memoryview]) -> bool:
        """Write the pieces after the bytes already there; False if they could not be (none of them is kept)."""
        if self.full:
            return False
        start = self.size
        try:
            if self._file is None:
                # Unbuffered: a full disk fails the write here, not a later flush.
                self._file = tempfile.TemporaryFile(buffering=0, prefix=self._prefix)  # noqa: SIM115
            for piece in pieces:
                left = piece.cast("B")
                while left:
                    left = left[self._file.write(left) :]
        except OSError:
            self.full = True
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.truncate(start)
                    self._file.seek(start)
            return False
        self.size = self._file.tell()
        return True

    def read_into(self, buffer: memoryview, at: int) -> None:
        """Fill `buffer` with the bytes from `at` on."""
        assert self._file is not None
        left = buffer.cast("B")
        while left:
            count = os.preadv(self._file.fileno(), [left], at)
            if not count:
                raise OSError(f"the file of set-aside bytes ends before byte {at + len(left)}")
            left, at = left[count:], at + count

    def empty(self) -> None:
        """Drop every byte: the next append writes from the start."""
        if self._file is not None:
            self._file.truncate(0)
            self._file.seek(0)
        self.size = 0

    def close(self) -> None:
        """Close the file, dropping its bytes; a later append starts a new one."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.size = 0
