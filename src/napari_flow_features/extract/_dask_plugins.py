"""Dask worker plugins of the batch (a module of its own: importing it imports ``distributed``)."""

from __future__ import annotations

import os
from typing import Any

from distributed import WorkerPlugin


class CoreShare(WorkerPlugin):
    """Dask worker plugin: pins each worker process of the default LocalCluster to its own cores
    (Linux), so the encoder's thread pools size themselves to the share.
    """

    name = "napari-flow-features-core-share"

    def __init__(self, cores_per_worker: int) -> None:
        self.cores_per_worker = cores_per_worker

    def setup(self, worker: Any) -> None:
        if not hasattr(os, "sched_setaffinity"):
            return
        from .batch import _cpus

        cpus = _cpus()
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
