"""The one way radar starts Dask: an existing scheduler, the embedded LocalCluster of single-threaded worker
*processes* (fastjet and torch hold the GIL, so threads would not run in parallel), or nothing (in-process).
Used by processing (:mod:`radar.processors.runner`), generation (:mod:`radar.processors.generate`) and the
search and scan tasks (:mod:`radar.analysis.execution`). Imports only dask and distributed."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Worker processes for the embedded cluster: one per core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def dask_client(
    workers: int | None = None, scheduler: str | None = None, *, processes: bool = True
) -> Iterator[object | None]:
    """A Dask client: an existing ``scheduler``, else the embedded LocalCluster of ``workers`` single-threaded
    workers (None: :func:`default_workers`; processes unless ``processes=False``), or None with dask's
    synchronous scheduler (``workers=0``, in-process). Closed on exit."""
    if scheduler:
        from distributed import Client

        log.info("connecting to Dask scheduler %s", scheduler)
        with Client(scheduler) as client:
            yield client
        return
    if workers == 0:
        import dask

        log.info("running in-process (synchronous scheduler)")
        with dask.config.set(scheduler="sync"):
            yield None
        return
    from distributed import Client, LocalCluster

    n = workers or default_workers()
    log.info(
        "starting embedded Dask LocalCluster: %d worker %s x 1 thread",
        n,
        "processes" if processes else "threads",
    )
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
