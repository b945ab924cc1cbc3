"""Messages on the command line: lines above the progress bars, and warnings once, plainly.

A Python warning would otherwise print as ``path.py:123: UserWarning: text`` plus the source
line, written straight into whatever progress bar is drawing. Here each warning prints as one
line, ``warning: text``, above the bars (tqdm's ``write``), and the same text only once per command.

Only the standard library is imported here (tqdm only when a bar already imported it).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


def write_line(text: str) -> None:
    """Write a line to stderr, above any open tqdm bar (which is redrawn under it).

    Parameters
    ----------
    text : str
        The line, without its newline.
    """
    if "tqdm" in sys.modules:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


def warning_text(message: Warning | str, category: type[Warning]) -> str:
    """A warning as the user reads it: its text, with its kind unless it is a plain user warning.

    Parameters
    ----------
    message : Warning or str
        The warning.
    category : type
        Its class.

    Returns
    -------
    str
        ``text``, or ``Kind: text`` for warnings other than ``UserWarning`` and its subclasses.
    """
    if issubclass(category, UserWarning):
        return str(message)
    return f"{category.__name__}: {message}"


@contextmanager
def plain_warnings() -> Iterator[None]:
    """Within the block, print each warning as ``warning: text`` above the bars, once per text.

    Python's filters still decide which warnings show; the previous behaviour comes back after.

    Yields
    ------
    None
    """
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = warning_text(message, category)
        if text not in seen:
            seen.add(text)
            write_line(f"warning: {text}")

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


class BarAwareHandler(logging.StreamHandler):
    """A logging handler writing above the progress bars, to whatever ``sys.stderr`` is now.

    ``sys.stderr`` is looked up at each record (pytest swaps it).
    """

    def emit(self, record: logging.LogRecord) -> None:
        """Write one formatted record as a line above the bars."""
        try:
            write_line(self.format(record))
        except Exception:  # a logging failure must not end the command
            self.handleError(record)
