"""Dock contents that scroll, so the plugin's docks together fit a small screen (1280x800).

napari docks a magicgui widget by its ``native`` QWidget, which is the inner widget even for
``Container(scrollable=True)``: the scroll area magicgui makes is dropped. :func:`make_scrollable`
moves the container's form (its layout, with every widget in it) into a scroll area inside
``native`` instead; widgets added to the container later still land in the form.
"""

from __future__ import annotations

from typing import Any


def make_scrollable(container: Any) -> Any:
    """Put a container's form in a vertical scroll area.

    Parameters
    ----------
    container : magicgui.widgets.Container
        The dock's container; its form (and widgets added later) move into the scroll area.

    Returns
    -------
    qtpy.QtWidgets.QScrollArea
        The scroll area, inside ``container.native``.
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

    outer = container.native
    form = outer.layout()
    form.addStretch(1)  # rows stay compact at the top of a tall dock (later rows go before it)
    body = QWidget()
    body.setLayout(form)  # takes the form's layout and reparents its widgets
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(body)
    # As wide as the form needs (no horizontal scrolling), as short as the dock allows.
    bar = scroll.verticalScrollBar()
    bar_width = bar.sizeHint().width() if bar is not None else 0
    scroll.setMinimumWidth(body.minimumSizeHint().width() + bar_width)
    layout = QVBoxLayout()
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(scroll)
    outer.setLayout(layout)
    return scroll
