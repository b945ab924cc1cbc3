"""The Dask clusters extraction runs on: a LocalCluster sized for it, or an existing one.

Pure (no Qt); ``distributed`` is imported only when a cluster is started or reached.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import BadInputError

#: Cores one video's encoder gets on the default LocalCluster (see docs/batch.md).
THREADS_PER_VIDEO = 4


def local_cluster_shape(cores: int | None = None) -> tuple[int, int]:
    """Return the default LocalCluster's shape: workers and cores per worker.

    ``(workers, cores per worker)`` of the default LocalCluster: one task at a time per worker
    process, each worker owning ``THREADS_PER_VIDEO`` cores (fewer on a smaller machine). TensorFlow
    and OpenVINO each start a thread per core they see; without a share per worker, n workers on
    n cores would run n² busy threads and lose throughput to switching.
    """
    from ._dask_plugins import usable_cpus

    cores = cores or len(usable_cpus())
    workers = max(1, cores // THREADS_PER_VIDEO)
    return workers, max(1, cores // workers)


def _cuda_cluster_class() -> Any:
    """dask-cuda's ``LocalCUDACluster`` when it is installed and an NVIDIA GPU is visible, else None.

    It starts one worker per GPU with ``CUDA_VISIBLE_DEVICES`` set to that GPU alone, so each
    worker's torch encoder (``runtime: auto``) runs on its own GPU (docs/batch.md). Asked only
    where a driver is present, so a CPU machine never imports dask-cuda or torch here.
    """
    import importlib.util

    from ..model.torch_runtime import nvidia_driver_present

    if not nvidia_driver_present() or importlib.util.find_spec("dask_cuda") is None:
        return None
    from dask_cuda import LocalCUDACluster

    return LocalCUDACluster


def local_client(workers: int | None = None, cores_per_worker: int | None = None) -> Any:
    """Start a Dask client on a new LocalCluster sized for extraction.

    A :class:`distributed.Client` on a new LocalCluster of worker processes shaped by
    :func:`local_cluster_shape` (one thread each). The scheduler and the workers keep their
    scratch space in an owner-tagged work folder in ``$TMPDIR`` (not Dask's shared
    ``dask-scratch-space``), which :func:`close_client` removes; a killed run's folder is removed
    by the next run. Close it with :func:`close_client` when done.
    """
    import dask
    from distributed import Client, LocalCluster

    from .._cache_dirs import DASK_DIR_STEM
    from ..io._atomic import make_work_dir
    from ._dask_plugins import usable_cpus

    default_workers, default_cores = local_cluster_shape()
    workers = workers or default_workers
    cores_per_worker = cores_per_worker or max(1, len(usable_cpus()) // workers) or default_cores
    env = {"OMP_NUM_THREADS": str(cores_per_worker),
           "TF_NUM_INTRAOP_THREADS": str(cores_per_worker),
           "TF_CPP_MIN_LOG_LEVEL": "2"}  # fmt: skip
    scratch = make_work_dir(stem=DASK_DIR_STEM)
    cluster = client = None
    try:
        # The scheduler reads the config, the workers the argument: neither writes elsewhere.
        with dask.config.set({"temporary-directory": str(scratch)}), _workers_ignore_ctrl_c():
            cuda = _cuda_cluster_class()
            if cuda is not None:  # one worker per GPU, each seeing only its own
                cluster = cuda(threads_per_worker=1, dashboard_address=":0", silence_logs=40,
                               local_directory=str(scratch))  # fmt: skip
                workers = len(cluster.workers)
            else:
                cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, env=env,
                    dashboard_address=":0", silence_logs=40, local_directory=str(scratch),
                )  # fmt: skip
        client = Client(cluster)
        if workers > 1:
            from ._dask_plugins import CoreShare

            client.register_plugin(CoreShare(cores_per_worker))
    except BaseException:
        for part in (client, cluster):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    _SCRATCH[id(client)] = scratch
    return client


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Start workers with Ctrl-C ignored; one pressed meanwhile stops the run once they are up.

    Ctrl-C in a terminal goes to every process of the foreground group: workers that heard it
    would die mid-task with tracebacks and leaked semaphores, before this process closes them
    in order. An ignored signal stays ignored in a child (and Python then installs no handler for
    it), so the workers leave stopping to :func:`close_client`. Outside the main thread, where
    signals cannot be set, nothing changes.

    This process ignores it too while the cluster starts (about a second), and an ignored signal
    is lost. Blocking SIGINT instead, to hold it, does not work: numpy's OpenBLAS thread (started
    at import) and Dask's loop thread (multiprocessing's resource tracker unblocks it there) do
    not block it, and the kernel hands the signal to such a thread, where it is dropped. So a
    ``sleep`` started first in the same process group keeps watch: a terminal's Ctrl-C ends it,
    and then :class:`KeyboardInterrupt` is raised here as soon as the cluster is up.
    """
    import signal

    main = threading.current_thread() is threading.main_thread()
    watch = _ctrl_c_watch() if main else None  # before the ignore, so it keeps the default action
    try:
        with _ctrl_c_ignored():
            yield
    finally:
        if watch is not None:
            pressed = watch.poll() == -signal.SIGINT
            watch.kill()
            watch.wait()
            if pressed:
                raise KeyboardInterrupt


def _ctrl_c_watch() -> subprocess.Popen | None:
    """A ``sleep`` in this process group, which a terminal's Ctrl-C ends; None where none runs."""
    sleep = shutil.which("sleep")
    if sleep is None:
        return None
    try:
        return subprocess.Popen([sleep, "120"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    except OSError:
        return None


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """Ignore Ctrl-C in this process for the block; outside the main thread, nothing changes."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


#: The scratch folder of each client :func:`local_client` started, removed by :func:`close_client`.
_SCRATCH: dict[int, Path] = {}


def connect(scheduler: str | None = None, scheduler_file: str | None = None) -> Any:
    """Connect to an existing Dask cluster.

    A client of an existing cluster: a scheduler ``ADDRESS`` (``tcp://host:8786``) or a
    scheduler file (``dask scheduler --scheduler-file``, dask-jobqueue, dask-mpi).
    """
    from distributed import Client

    if scheduler and scheduler_file:
        raise BadInputError("Give --scheduler or --scheduler-file, not both")
    if scheduler_file is not None and not Path(scheduler_file).is_file():
        raise BadInputError(f"Scheduler file not found: {scheduler_file}")
    try:
        if scheduler_file is not None:
            return Client(scheduler_file=scheduler_file, timeout="20s")
        return Client(scheduler, timeout="20s")
    except OSError as exc:
        where = scheduler or scheduler_file
        raise BadInputError(f"Cannot reach the Dask scheduler {where}: {exc}") from exc


def close_client(client: Any) -> None:
    """Close ``client`` and, when it owns one, its LocalCluster and scratch folder.

    The worker processes end; the scratch folder :func:`local_client` made is removed, and so are
    the run folders its workers left in ``$TMPDIR`` when a task was stopped (their owners are
    gone). Ctrl-C is ignored meanwhile (the close takes seconds).
    """
    from .._cache_dirs import WORK_DIR_STEM, temp_root
    from ..io._atomic import remove_stale_partials

    cluster = getattr(client, "cluster", None)
    scratch = _SCRATCH.pop(id(client), None)
    # The run is stopping already: a second Ctrl-C cutting the close short made it slower and
    # noisier (Dask then failed to remove its own folders).
    with _ctrl_c_ignored():
        try:
            client.close()
            if cluster is not None:
                cluster.close()
        finally:
            if scratch is not None:  # our LocalCluster: its workers' run folders, owners gone
                shutil.rmtree(scratch, ignore_errors=True)
                remove_stale_partials(temp_root(), WORK_DIR_STEM)
