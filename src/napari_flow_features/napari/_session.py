"""What happens when a napari window closes: the plugin's workers stop, its temporary files go.

napari has no public "viewer closed" event; its main window is deleted when it closes, so the
plugin listens to that Qt window's ``destroyed`` signal. Callbacks are kept per window and run once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_CALLBACKS: dict[int, dict[str, Callable[[], None]]] = {}


def open_windows(name: str | None = None) -> int:
    """Count the open napari windows the plugin watches.

    Parameters
    ----------
    name : str, optional
        Count only windows with a callback of that name.

    Returns
    -------
    int
        The number of watched windows.
    """
    return sum(1 for callbacks in _CALLBACKS.values() if name is None or name in callbacks)


def window_key(viewer: Any) -> int | None:
    """Identify the viewer's main Qt window.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        The viewer (or the proxy napari hands plugin widgets).

    Returns
    -------
    int or None
        An id of its main Qt window; ``None`` for a viewer without one (a ViewerModel).
    """
    real = getattr(viewer, "__wrapped__", viewer)  # napari hands plugin widgets a proxy
    qt_window = getattr(getattr(real, "window", None), "_qt_window", None)
    return None if qt_window is None else id(qt_window)


def on_viewer_closed(viewer: Any, name: str, callback: Callable[[], None]) -> bool:
    """Run a callback once when the viewer's window is destroyed.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        The viewer to watch.
    name : str
        The callback's name: one callback per name and window (a later one replaces it).
    callback : callable
        Called with no arguments.

    Returns
    -------
    bool
        Whether the viewer has a window to watch.
    """
    real = getattr(viewer, "__wrapped__", viewer)
    qt_window = getattr(getattr(real, "window", None), "_qt_window", None)
    if qt_window is None:
        return False
    key = id(qt_window)
    if key not in _CALLBACKS:
        _CALLBACKS[key] = {}
        qt_window.destroyed.connect(lambda *_: _closed(key))
    _CALLBACKS[key][name] = callback
    return True


def _closed(key: int) -> None:
    for callback in _CALLBACKS.pop(key, {}).values():
        callback()
