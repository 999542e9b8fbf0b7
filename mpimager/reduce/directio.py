"""Writing one byte range of a file (a cube's plane) past the page cache, while the caller goes on.

A cube is written once, a plane at a time by many threads and ranks, and not read back by the process
that writes it. Through the page cache, every byte is copied into a newly allocated cache page first: on
the 2-core machine, 1.8 GB written that way cost 0.3-5 s of CPU (the first touch of fresh pages), written
with O_DIRECT 0.2 s of CPU and 1 s of disk time. So `RangeWriter` sends the range's whole pages with
O_DIRECT, a megabyte at a time, from page-aligned staging buffers to two writer threads (a thread waiting
on the disk holds no core), keeping a few writes in flight; the partial pages at the range's ends, which
it shares with a header or the planes beside it, go through the page cache, and so does everything where
O_DIRECT is refused (tmpfs on older kernels, some network filesystems), at open or at the first write.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

#: alignment of direct writes (file offset, length and memory): a page, which every filesystem accepts
_PAGE = 4096
#: bytes gathered before one direct write, and how many such writes a range keeps in flight
_STAGE = 1 << 20
_IN_FLIGHT = 3
_stages = threading.local()  # a thread's page-aligned staging buffers, reused range after range
_writer_lock = threading.Lock()
_writer: ThreadPoolExecutor | None = None


def _direct_writer() -> ThreadPoolExecutor:
    """The process's threads that make direct writes (a thread waiting on the disk holds no core)."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = ThreadPoolExecutor(2, thread_name_prefix="mpimager-write")
        return _writer


def _pwrite_all(fd: int, data: memoryview, at: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], at + done)


class RangeWriter:
    """The bytes of the range from `start` to `end` of the existing file at `path`, taken in order (`write`),
    all on disk once `flush` returns; `close` always (it waits for writes in flight after a failure)."""

    def __init__(self, path: str, start: int, end: int) -> None:
        self.fd = os.open(path, os.O_WRONLY)
        self.pos, self.end = start, end  # the file position of the next byte
        self.head_end = min(end, -(-start // _PAGE) * _PAGE)  # the first page boundary inside the range
        self.direct: int | None = None
        if end - self.head_end >= _PAGE and hasattr(os, "O_DIRECT"):
            try:
                self.direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
            except OSError:
                self.direct = None
        if not hasattr(_stages, "free"):
            _stages.free = []
        self.pending: deque[tuple[Future, mmap.mmap, int, int]] = deque()  # (write, buffer, bytes, at)
        self.stage = self._buffer() if self.direct is not None else None
        self.fill = 0  # bytes staged: the file's [pos - fill, pos), starting on a page boundary

    def write(self, data: memoryview) -> None:
        """Take the range's next bytes, `data` (copied: the caller may reuse it)."""
        if self.pos + len(data) > self.end:
            raise ValueError(f"{self.pos + len(data) - self.end} bytes past the end of the range being written")
        i = 0
        if self.pos < self.head_end:  # the range's first, partial page
            i = min(len(data), self.head_end - self.pos)
            self._buffered(data[:i], self.pos)
            self.pos += i
        if self.stage is None:
            self._buffered(data[i:], self.pos)
            self.pos += len(data) - i
            return
        while i < len(data):
            k = min(len(data) - i, _STAGE - self.fill)
            self.stage[self.fill:self.fill + k] = data[i:i + k]
            self.fill, self.pos, i = self.fill + k, self.pos + k, i + k
            if self.fill == _STAGE:
                self._send(_STAGE, self.pos - _STAGE)

    def flush(self) -> None:
        """Write what is staged (its whole pages directly, the range's last partial page buffered) and wait
        for every write of the range; a failed write raises here."""
        if self.fill:
            assert self.stage is not None, "staged bytes without a stage"
            n, at = self.fill // _PAGE * _PAGE, self.pos - self.fill
            self._buffered(memoryview(self.stage)[n:self.fill], at + n)
            if n:
                self._send(n, at)
            self.fill = 0
        while self.pending:
            self._finish_oldest()

    def close(self) -> None:
        """Wait for writes still in flight (after a failure) and close the files."""
        for future, buf, _, _ in self.pending:
            with contextlib.suppress(Exception):
                future.result()
            _stages.free.append(buf)
        self.pending.clear()
        if self.stage is not None:
            _stages.free.append(self.stage)
            self.stage = None
        os.close(self.fd)
        if self.direct is not None:
            os.close(self.direct)
            self.direct = None

    def _buffer(self) -> mmap.mmap:
        return _stages.free.pop() if _stages.free else mmap.mmap(-1, _STAGE)  # page-aligned

    def _send(self, n: int, at: int) -> None:
        """Hand the first `n` staged bytes (whole pages, for file position `at`) to a writer thread; take a
        fresh stage."""
        assert self.stage is not None, "no stage to send"
        if self.direct is None:
            self._buffered(memoryview(self.stage)[:n], at)
        else:
            write = _direct_writer().submit(_pwrite_all, self.direct, memoryview(self.stage)[:n], at)
            self.pending.append((write, self.stage, n, at))
            self.stage = None
            if len(self.pending) >= _IN_FLIGHT:
                self._finish_oldest()
            self.stage = self._buffer()
        self.fill = 0

    def _finish_oldest(self) -> None:
        write, buf, n, at = self.pending.popleft()
        try:
            write.result()
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                _stages.free.append(buf)
                raise
            self._give_up_direct([(buf, n, at)])
            return
        _stages.free.append(buf)

    def _give_up_direct(self, failed: list[tuple[mmap.mmap, int, int]]) -> None:
        """O_DIRECT refused after all: wait for the writes in flight, write them again (with the `failed`
        ones) through the page cache, and use it from now on."""
        for write, buf, n, at in self.pending:
            with contextlib.suppress(OSError):
                write.result()
            failed.append((buf, n, at))
        self.pending.clear()
        for buf, n, at in failed:
            self._buffered(memoryview(buf)[:n], at)
            _stages.free.append(buf)
        if self.direct is not None:
            os.close(self.direct)
            self.direct = None

    def _buffered(self, data: memoryview, at: int) -> None:
        _pwrite_all(self.fd, data, at)
