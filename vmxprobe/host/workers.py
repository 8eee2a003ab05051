"""Blocks of reads done by forked worker processes, while the caller does other work.

A scan of a live host reads every CPU's registers through its own device file; the
reads of different CPUs are independent, and on real hardware each one waits for a
cross-CPU call (rdmsr_safe_on_cpu()), so CPUs read in several processes at once finish
sooner. Threads would not do: the interpreter lock is released only around the pread()
itself. docs/benchmarks.md has the figures.

Each worker is a fork of the caller that runs job(block), sends the pickled result back
over a pipe and exits. Workers never outlive the caller's `with` block: they are killed
(SIGKILL) and reaped when it ends, by an exception (KeyboardInterrupt included) or not,
and the kernel kills them if the caller dies first (PR_SET_PDEATHSIG). A worker that
fails (an exception, a signal, a result that cannot be read) yields FAILED for its
block, and the caller does that block itself: the reads are read-only and can be made
again, with the same results and the same errors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")

FAILED: Any = object()  # results() for a block whose worker failed

_PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h


def usable_cpus() -> int:
    """How many CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Forked(Generic[T]):
    """job(block) for each block, each in a forked worker, started at once."""

    def __init__(self, job: Callable[[T], object], blocks: Sequence[T]):
        self._workers: list[tuple[int, int]] = []  # (pid, read end of its pipe)
        try:
            for block in blocks:
                self._start(job, block)
        except BaseException:
            self.close()
            raise

    def _start(self, job: Callable[[T], object], block: T) -> None:
        parent = os.getpid()
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            raise
        if pid == 0:  # the worker: never returns
            code = 1
            try:
                import pickle  # here and below, not at start-up: most scans start no worker

                os.close(r)
                _die_with(parent)
                data = pickle.dumps(job(block), pickle.HIGHEST_PROTOCOL)
                view = memoryview(data)
                while view:
                    view = view[os.write(w, view) :]
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        self._workers.append((pid, r))

    def results(self) -> list[Any]:
        """Each block's job(block), in the order of the blocks; FAILED for a block whose
        worker failed. Waits for every worker."""
        out = []
        while self._workers:
            import pickle  # here: results() is asked of every scan, most of them without workers

            pid, r = self._workers[0]
            chunks = []
            while True:
                chunk = os.read(r, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            # Waited for without reaping, then forgotten, then reaped: close() never
            # signals a pid that is no longer this worker's.
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            del self._workers[0]
            os.close(r)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                out.append(FAILED)
                continue
            try:
                out.append(pickle.loads(b"".join(chunks)))
            except Exception:
                out.append(FAILED)
        return out

    def close(self) -> None:
        """Kill and reap every worker still there, and close the pipes."""
        workers, self._workers = self._workers, []
        for pid, r in workers:
            import signal  # here: close() ends every scan, most of them without workers

            os.close(r)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def __enter__(self) -> Forked[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when the parent dies; if it already has, go."""
    import ctypes  # here, not at start-up: only a worker needs it
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
