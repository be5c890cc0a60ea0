"""Running a batch on a Dask cluster.

:func:`csaws_tools.batch.run_batch` calls :func:`execute_on_dask` when a
command is given ``--scheduler ADDRESS``. The per-file work is the same as on
one machine (the same worker function, the same atomic writes and settings
hashes); only where it runs changes:

* ``local``: a :class:`distributed.LocalCluster` on this machine, one
  single-threaded worker process per core, listening on 127.0.0.1 only;
* ``tcp://host:8786`` (or any address :class:`distributed.Client` accepts):
  a running scheduler, for example one started by ``dask-jobqueue`` on SLURM;
* a path to a scheduler file (``scheduler.json``, as written by
  ``dask scheduler --scheduler-file`` or ``dask-mpi``).

Inputs travel in batches of many files per cluster task (at most
:data:`MAX_BATCH_SIZE`): per-task scheduling costs about a millisecond, so one
task per file would make the scheduler the bottleneck on millions of small
files (Dask's best-practice guidance). Only a bounded number of batches is in
flight at once, so the scheduler's memory does not grow with the cohort.

A worker that dies mid-batch (killed, out of memory, node lost) has its batch
rerun elsewhere by the scheduler (``distributed.scheduler.allowed-failures``,
3 by default). Outputs are written atomically, so the rerun never sees a
half-written file; inputs the lost attempt had already finished are then
reported as ``skipped`` (their outputs are complete, with the same settings
hash). A batch that keeps killing workers is split into single files so that
only the input that kills its worker fails.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from .. import __version__
from ..errors import CsawsError, DependencyError, SettingsError, one_line
from .tasks import Task, Worker, default_workers, error_row, run_tasks

#: Largest default number of inputs per cluster task.
MAX_BATCH_SIZE = 200
#: Default aim: this many tasks per worker, so the load stays balanced near the end.
TASKS_PER_WORKER = 4
#: Seconds to wait for a scheduler (or a LocalCluster) before giving up.
CONNECT_TIMEOUT = 30.0
#: Batches kept in flight per worker thread; more are submitted as these finish.
IN_FLIGHT_PER_THREAD = 3

DIED_MESSAGE = "worker process died while processing this input (retried on other workers)"


def import_distributed():
    """Import :mod:`distributed`, or explain which extra to install."""
    try:
        import distributed
    except ImportError as exc:
        raise DependencyError(
            "scheduler= needs Dask: pip install 'csaws-tools[dask]' "
            f"(installs dask[distributed]; {one_line(exc)})", param="scheduler"
        ) from None
    return distributed


def default_batch_size(n_tasks: int, n_workers: int) -> int:
    """Inputs per cluster task: about :data:`TASKS_PER_WORKER` tasks per worker, at most 200.

    Small runs still spread over every worker; large runs use batches of
    :data:`MAX_BATCH_SIZE`, which keeps per-task overhead far below the work.
    """
    per_task = math.ceil(n_tasks / max(1, TASKS_PER_WORKER * max(1, n_workers)))
    return max(1, min(MAX_BATCH_SIZE, per_task))


def connect(scheduler: str, workers: int | None = None, timeout: float | None = None):
    """Return ``(client, cluster)`` for ``scheduler``; ``cluster`` is None unless we started it.

    ``"local"`` starts a LocalCluster of ``workers`` single-threaded processes
    on the loopback interface with no dashboard; anything else is a scheduler
    address or a scheduler file.
    """
    distributed = import_distributed()
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    if scheduler == "local":
        n = workers or default_workers()
        try:
            cluster = distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                # The scheduler's small HTTP server (health checks) on a free loopback port.
                scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.ERROR,
            )
        except Exception as exc:  # noqa: BLE001 - report any start-up failure in one line
            raise CsawsError(f"scheduler='local': could not start a local Dask cluster ({one_line(exc)})",
                             param="scheduler") from None
        try:
            client = distributed.Client(cluster, timeout=timeout, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        return client, cluster
    kwargs: dict[str, Any] = {"timeout": timeout, "set_as_default": False}
    if scheduler.endswith(".json") and "://" not in scheduler:
        if not os.path.isfile(scheduler):
            raise SettingsError(f"scheduler={scheduler!r}: scheduler file not found", param="scheduler")
        kwargs["scheduler_file"] = scheduler
    else:
        kwargs["address"] = scheduler
    try:
        client = distributed.Client(**kwargs)
    except (OSError, TimeoutError, ValueError) as exc:
        raise SettingsError(
            f"scheduler={scheduler!r}: cannot reach the Dask scheduler within {timeout:g} s "
            f"({one_line(exc)}); is it running, and is the address right (tcp://host:8786)?", param="scheduler"
        ) from None
    return client, None


def _worker_threads(client) -> int:
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - fall back when the scheduler is briefly unreachable
        return 1


def execute_on_dask(
    worker: Worker,
    tasks: Sequence[Task],
    scheduler: str,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    timeout: float | None = None,
) -> Iterator[list[tuple[dict, Any]]]:
    """Run ``worker`` over ``tasks`` on a Dask cluster, yielding each batch's results as it finishes.

    Each yielded item is what :func:`csaws_tools.batch.run_tasks` returned for
    one batch: a list of ``(row, payload)``. Batches come back in completion
    order, so a progress bar follows the cluster. ``workers`` sets the size of
    a ``local`` cluster and is ignored for a running scheduler (its workers
    decide). The client, and a cluster started here, are closed on return,
    on error and on Ctrl-C; batches still queued are cancelled.
    """
    if not tasks:
        return
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    client, cluster = connect(scheduler, workers=workers, timeout=timeout)
    distributed = import_distributed()
    run_id = uuid.uuid4().hex[:12]
    name = getattr(getattr(worker, "func", worker), "__name__", "work")
    counter = 0
    futures: dict[Any, list[Task]] = {}
    suspects: list[Task] = []
    try:
        if cluster is None:
            try:
                client.wait_for_workers(1, timeout=timeout)
            except (TimeoutError, OSError) as exc:
                raise CsawsError(
                    f"scheduler={scheduler!r}: no Dask worker joined within {timeout:g} s ({one_line(exc)})",
                    param="scheduler",
                ) from None
        _check_workers(client, worker, scheduler)
        threads = _worker_threads(client)
        size = batch_size or default_batch_size(len(tasks), threads)
        queue = [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]
        queue.reverse()  # pop() from the end keeps input order

        def submit(batch: list[Task]):
            nonlocal counter
            counter += 1
            # A unique, readable key per run: two runs never share results.
            key = f"csaws-{name}-{run_id}-{counter:06d}"
            fut = client.submit(run_tasks, worker, batch, key=key, pure=False, retries=1)
            futures[fut] = batch
            return fut

        def fill(done_set) -> None:
            limit = max(4, IN_FLIGHT_PER_THREAD * _worker_threads(client))
            while queue and len(futures) < limit:
                done_set.add(submit(queue.pop()))

        pending = distributed.as_completed(loop=client.loop)
        fill(pending)
        for fut in pending:
            batch = futures.pop(fut)
            try:
                result = fut.result()
            except distributed.KilledWorker:
                if len(batch) > 1:
                    # Rerun file by file so only the input that kills workers fails.
                    for task in batch:
                        pending.add(submit([task]))
                else:
                    # A file can be blamed for a death it only stood beside (it was
                    # queued on the same worker): judge it alone, after the rest.
                    suspects.append(batch[0])
                result = None
            except (distributed.client.FutureCancelledError, OSError) as exc:
                raise CsawsError(f"scheduler={scheduler!r}: lost the Dask cluster ({one_line(exc)})",
                                 param="scheduler") from None
            except Exception as exc:  # noqa: BLE001 - run_tasks itself never raises: the cluster could not run it
                raise CsawsError(
                    f"scheduler={scheduler!r}: a batch could not run on the cluster ({one_line(exc)}); "
                    f"is csaws-tools {__version__} installed on every worker?", param="scheduler"
                ) from None
            finally:
                fut.release()
            if result is not None:
                yield result
            fill(pending)
        for task in suspects:  # one at a time, nothing else running: only a real culprit fails
            fut = submit([task])
            try:
                yield fut.result()
            except distributed.KilledWorker:
                yield [(error_row(task, DIED_MESSAGE), None)]
            finally:
                futures.pop(fut, None)
                fut.release()
    finally:
        for fut in list(futures):
            fut.cancel()
        futures.clear()
        try:
            client.close()
        finally:
            if cluster is not None:
                cluster.close()


def probe(worker: Worker) -> str:
    """Runs on each Dask worker: unpickling ``worker`` proves its module imports there."""
    return __version__


def _check_workers(client, worker: Worker, scheduler: str) -> None:
    """Check that every worker can import ``worker`` and runs this version of csaws-tools.

    A task whose function cannot be unpickled on a worker would otherwise
    leave the worker unable to take more work and the run waiting forever.
    """
    try:
        versions = client.run(probe, worker)
    except Exception as exc:  # noqa: BLE001 - any failure here means the workers cannot run the batch
        raise CsawsError(
            f"scheduler={scheduler!r}: the Dask workers cannot run this command ({one_line(exc)}); "
            f"is csaws-tools {__version__} installed on every worker?", param="scheduler"
        ) from None
    other = sorted({v for v in versions.values() if v != __version__})
    if other:
        raise DependencyError(
            f"scheduler={scheduler!r}: Dask workers run csaws-tools {', '.join(other)}, this machine "
            f"{__version__}; install the same version everywhere so outputs match", param="scheduler"
        )


__all__ = [
    "connect",
    "CONNECT_TIMEOUT",
    "default_batch_size",
    "DIED_MESSAGE",
    "execute_on_dask",
    "import_distributed",
    "IN_FLIGHT_PER_THREAD",
    "MAX_BATCH_SIZE",
    "probe",
    "TASKS_PER_WORKER",
]
