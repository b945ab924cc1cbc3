"""One job of napari-plugin-manager's own installer, run headless in the environment it changes.

Usage (with that environment's Python; ``check_release.py`` runs it)::

    python plugin_manager_job.py install NAME --origin http://127.0.0.1:PORT/simple/
    python plugin_manager_job.py uninstall NAME

The job goes through ``NapariInstallerQueue``, the class behind napari's Plugins ▸
Install/Uninstall Plugins… dialog: the same tool choice (uv when installed, else pip), the same
command (``python -m pip install -c <napari constraint> --extra-index-url ORIGIN NAME``, or ``pip
uninstall -y NAME``), the same output widget and, after an uninstall, the same unregistering from
npe2's plugin manager. Headless: a ``QApplication`` on Qt's offscreen platform, no window. Exit
status 0 when the job finished with exit code 0 and, for an uninstall, the plugin left npe2's
plugin manager in this process; the installer's output is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def run_job(action: str, name: str, origins: list[str], timeout_s: float) -> int:
    """Queue one install or uninstall job, wait for it and return its exit code (-1: none)."""
    from napari_plugin_manager.base_qt_package_installer import InstallerTools
    from napari_plugin_manager.qt_package_installer import NapariInstallerQueue
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication, QTextEdit

    _app = QApplication.instance() or QApplication([])  # kept alive while the job runs
    queue = NapariInstallerQueue()
    output = QTextEdit()  # the dialog's log panel
    queue.set_output_widget(output)
    finished: list[dict[str, object]] = []
    queue.processFinished.connect(finished.append)
    loop = QEventLoop()
    queue.allFinished.connect(loop.quit)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    tool = NapariInstallerQueue.PYPI_INSTALLER_TOOL_CLASS.__name__
    print(f"== napari-plugin-manager {action} {name} with {tool}", flush=True)
    if action == "install":
        queue.install(InstallerTools.PYPI, [name], origins=origins)
    else:
        queue.uninstall(InstallerTools.PYPI, [name])
    loop.exec()
    print(output.toPlainText(), flush=True)
    if not finished:
        print(f"the {action} job did not finish within {timeout_s:.0f} s", file=sys.stderr)
        return -1
    return int(finished[0]["exit_code"])  # type: ignore[call-overload]


def main(argv: list[str] | None = None) -> int:
    """Run the job; for an uninstall, check npe2 forgets the plugin in this process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["install", "uninstall"])
    parser.add_argument("name", help="the distribution to install or uninstall")
    parser.add_argument("--origin", action="append", default=[], help="an extra package index")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait")
    args = parser.parse_args(argv)
    from npe2 import PluginManager

    manager = PluginManager.instance()
    manager.discover()
    before = args.name in manager
    start = time.monotonic()
    code = run_job(args.action, args.name, args.origin, args.timeout)
    print(f"== {args.action} finished with exit code {code} in {time.monotonic() - start:.1f} s")
    if code != 0:
        return 1
    if args.action == "uninstall" and (not before or args.name in manager):
        print(
            f"npe2 knew {args.name} before the uninstall: {before}; after it: "
            f"{args.name in manager} (the installer should unregister it)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
