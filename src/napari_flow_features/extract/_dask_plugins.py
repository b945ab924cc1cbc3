"""Dask worker plugins of the batch (a module of its own: importing it imports ``distributed``)."""

from __future__ import annotations

import os
from typing import Any

from distributed import WorkerPlugin


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity on Linux, else every core).

    Returns
    -------
    list of int
        CPU numbers, sorted.
    """
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


class CoreShare(WorkerPlugin):
    """Dask worker plugin pinning each worker process of the default LocalCluster to its own cores.

    Linux only (elsewhere it does nothing): the encoder's thread pools then size themselves to the
    share.

    Parameters
    ----------
    cores_per_worker : int
        Cores each worker gets; worker ``n`` takes the n-th share (wrapping around).
    """

    name = "napari-flow-features-core-share"

    def __init__(self, cores_per_worker: int) -> None:
        self.cores_per_worker = cores_per_worker

    def setup(self, worker: Any) -> None:
        """Pin the worker's threads to its share and cap OpenMP/TensorFlow threads to it.

        Parameters
        ----------
        worker : distributed.Worker
            The worker starting up (its ``name`` is its slot number).
        """
        if not hasattr(os, "sched_setaffinity"):
            return
        cpus = usable_cpus()
        try:
            slot = int(worker.name)
        except (TypeError, ValueError):
            return
        first = (slot * self.cores_per_worker) % len(cpus)
        share = set(cpus[first : first + self.cores_per_worker]) or set(cpus)
        for tid in os.listdir("/proc/self/task"):  # every thread; new ones inherit the share
            try:
                os.sched_setaffinity(int(tid), share)
            except OSError:
                pass
        for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            os.environ[var] = str(len(share))
