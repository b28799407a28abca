"""One way to run independent tasks: in-process (``mode: sync``) or as Dask tasks on the embedded LocalCluster
(processes: fastjet and torch hold the GIL) or on any scheduler. ``radar search`` runs its units through it,
``radar scan`` the units of every window at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

log = logging.getLogger(__name__)

Task = tuple[Hashable, tuple]  # (key, positional arguments of the task function)


def run_tasks(
    fn: Callable[..., Any],
    phases: Sequence[Sequence[Task]],
    execution: Any,
    *,
    progress: bool = True,
    desc: str = "tasks",
) -> dict[Hashable, Any]:
    """Run ``fn(*args)`` for every task, phase after phase (a phase starts when the previous one finished).

    execution: an ``ExecutionConfig`` (``mode``, ``workers``, ``scheduler``, ``processes``). One failed task
    never stops the others: its result is the string ``"<ExceptionType>: <message>"`` (logged). Returns
    ``{key: result}``.
    """
    from tqdm.auto import tqdm

    total = sum(len(p) for p in phases)
    results: dict[Hashable, Any] = {}
    bar = tqdm(total=total, desc=desc, disable=not progress or not total)
    if execution.mode == "sync" or not total:
        try:
            for phase in phases:
                for key, args in phase:
                    try:
                        results[key] = fn(*args)
                    except Exception as error:  # one failed task must not stop the others
                        log.exception("%s %s failed", desc, key)
                        results[key] = f"{type(error).__name__}: {error}"
                    bar.update()
        finally:
            bar.close()
        return results

    from distributed import as_completed

    from radar.processors.cluster import dask_client, default_workers

    workers = (
        None
        if execution.scheduler
        else (execution.workers or min(max(len(p) for p in phases), default_workers()))
    )
    where = execution.scheduler or f"a LocalCluster of {workers} workers"
    log.info("%s: %d tasks on %s", desc, total, where)
    try:
        with dask_client(workers, execution.scheduler, processes=execution.processes) as client:
            for phase in phases:
                futures = {
                    client.submit(
                        fn, *args, pure=False, key=f"radar-{desc.replace(' ', '-')}-{i}-{time.time_ns()}"
                    ): key
                    for i, (key, args) in enumerate(phase)
                }
                try:
                    for future in as_completed(futures):
                        key = futures[future]
                        bar.update()
                        try:
                            results[key] = future.result()
                        except Exception as error:
                            log.error("%s %s failed: %s: %s", desc, key, type(error).__name__, error)
                            results[key] = f"{type(error).__name__}: {error}"
                except BaseException:
                    # interrupted (Ctrl-C, SIGTERM): queued tasks are cancelled on the scheduler; a task
                    # already running on a worker cannot be stopped by Dask, and writes nothing into the run
                    # once the run's manifest says it stopped (search._check_run_current)
                    pending = [f for f in futures if not f.done()]
                    if pending:
                        log.warning("%s: cancelling %d tasks not finished", desc, len(pending))
                        client.cancel(pending, force=True)
                    raise
    finally:
        bar.close()
    return results
