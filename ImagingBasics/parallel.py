"""Run independent per-case jobs (phantom generation, preprocessing) in worker processes.

One thread per worker: SimpleITK, numpy's BLAS and torch each start one thread per core by default, and many
processes with many threads each oversubscribe the machine (measured on a 16-core server: 50 full-size phantoms took
427 s on 15 multi-threaded workers). Workers are started with the "spawn" method, which is safe in a process that
already runs threads (torch, Slicer); ``workers <= 1`` runs the jobs in this process, one after the other.
As with any spawn-based pool, a script that calls this with ``workers > 1`` must keep its top-level code under
``if __name__ == "__main__":`` (the workers import the script's main module); the ``ctpm`` commands do. Inside Slicer
use ``workers=1`` (its executable is not a plain Python interpreter).

A worker whose parent is gone exits (:func:`exit_with_parent`): a parent killed outright (SIGKILL, the out-of-memory
killer) cannot shut its pool down, and its workers would otherwise go on with the jobs already queued for them, writing
cases into the output folder, then wait forever (measured: ``ctpm phantom --workers 2`` killed with SIGKILL wrote
three more cases and left two idle orphans).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Iterable, Iterator, List, Optional, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """All cores but one (at least 1): what ``--workers`` defaults to on the command line."""
    return max(1, (os.cpu_count() or 2) - 1)


def single_threaded() -> None:
    """Pool initialiser: limit this process to one thread in SimpleITK, BLAS/OpenMP and torch."""
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass


def exit_with_parent(poll_s: float = 0.5) -> threading.Thread:
    """Start a daemon thread that ends this process (exit status 1) as soon as its parent process is gone.

    A process whose parent dies is handed to another one (init or a subreaper), so its parent pid changes; the thread
    polls it every ``poll_s`` seconds. Returns the thread.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def worker_setup() -> None:
    """Pool initialiser: one thread per library (:func:`single_threaded`), and exit when the parent is gone."""
    single_threaded()
    exit_with_parent()


def map_in_processes(fn: Callable[[T], R], items: Iterable[T], workers: int = 1,
                     progress: Optional[Callable[[int, int, R], None]] = None) -> List[R]:
    """``[fn(item) for item in items]``, in ``workers`` processes when ``workers > 1`` (results in input order).

    ``fn`` must be a module-level function (it is pickled). ``progress(done, total, result)`` is called as results
    arrive (in input order). An exception in a job is raised here, unchanged (a UserError keeps its message).
    """
    items = list(items)
    results: List[R] = []
    for i, r in enumerate(_results(fn, items, workers), start=1):
        results.append(r)
        if progress is not None:
            progress(i, len(items), r)
    return results


def _results(fn: Callable[[T], R], items: List[T], workers: int) -> Iterator[R]:
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(items)), mp_context=context, initializer=worker_setup) as pool:
        yield from pool.map(fn, items)
