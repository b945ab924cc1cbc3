"""The model worker's own entry point: the child process :class:`~.worker.ModelWorker` starts.

The worker is ``sys.executable`` running this module (never a ``multiprocessing`` "spawn" child,
which re-imports the caller's ``__main__``: a napari script without an ``if __name__ ==
"__main__":`` guard would open a second viewer in the child). It talks to its parent over one
socket it inherits (``multiprocessing.connection`` framing: pickled messages):

* parent → child: ``b"J"`` and a pickled job, ``b"cancel"``, ``b"stop"``;
* child → parent: ``("status", text)``, ``("progress", done, total)``, ``("flow", done, total)``,
  ``("warning", text)``, ``("result", reply)``, ``("cancelled",)``, ``("error", text)``.

A thread reads the socket, so a cancel arrives while a job runs. The child ends when its parent
does (the socket closes, or its parent pid changes). Its stdout and stderr are the worker's log.

Run as ``python -c <bootstrap> PACKAGE_ROOT FD ROOT PARENT_PID`` (see ``worker._child_command``).
"""

from __future__ import annotations

import os
import pickle
import queue
import shutil
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from .worker import CANCEL, JOB, STOP


class _Replies:
    """The child's side of the socket for replies: ``put(message)`` from any thread."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def put(self, message: tuple) -> None:
        """Send one reply (progress callbacks and warnings may come from other threads)."""
        with self._lock:
            self._conn.send(message)


class _Requests:
    """The job loop's side of the requests: ``get()`` blocks for the next job (None: stop).

    Jobs are unpickled here, in the job loop's thread, not in the socket's reader thread: a job
    holds NumPy arrays and tables, and unpickling them while the main thread imports TensorFlow
    (and NumPy with it) would import NumPy from two threads at once.
    """

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue()

    def get(self) -> Any:
        """The next job (a dict), or None when the parent asked the worker to stop."""
        data = self.queue.get()
        return None if data is None else pickle.loads(data)


def _read_requests(
    conn: Connection, requests: _Requests, cancel: threading.Event, root: str
) -> None:
    """Feed jobs to the job loop and set ``cancel``; end the process when the parent is gone.

    Messages are ``b"cancel"``, ``b"stop"`` or ``b"J"`` and a pickled job. A job clears the cancel
    flag: a cancel the parent sent for the previous job (after it had already finished) must not
    stop the next one. The messages of one socket keep their order.
    """
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # the parent closed the socket or died
            shutil.rmtree(root, ignore_errors=True)
            os._exit(0)
        if data == CANCEL:
            cancel.set()
        elif data == STOP:  # finish the loop after the current job
            requests.queue.put(None)
        else:
            cancel.clear()
            requests.queue.put(data[len(JOB) :])


def main(argv: list[str]) -> None:
    """Run the worker: ``argv`` is ``[FD, ROOT, PARENT_PID]``.

    Parameters
    ----------
    argv : list of str
        The inherited socket's file descriptor, the parent's temporary folder and the parent's
        process id.
    """
    from .worker import _child_main

    fd, root, parent_pid = int(argv[0]), argv[1], int(argv[2])
    conn = Connection(fd)
    requests = _Requests()
    cancel = threading.Event()
    reader = threading.Thread(target=_read_requests, args=(conn, requests, cancel, root),
                              name="flow-features-requests", daemon=True)  # fmt: skip
    reader.start()
    _child_main(requests, _Replies(conn), cancel, root, parent_pid)
    sys.stdout.flush()
    sys.stderr.flush()


def _run(argv: list[str]) -> Any:
    """Run :func:`main` and exit without waiting for daemon threads (TensorFlow's included)."""
    main(argv)
    os._exit(0)


if __name__ == "__main__":
    _run(sys.argv[1:])
