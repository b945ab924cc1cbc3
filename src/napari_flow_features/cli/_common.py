"""What every sub-command shares: output and progress, logging, signals, exit codes, option types.

Only the standard library is imported here, so ``flow-features --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import BadInputError, CancelledError
from ._messages import BarAwareHandler, plain_warnings
from ._messages import write_line as _write_stderr

#: Exit statuses of ``flow-features`` (docs/cli.md).
EXIT_OK = 0
#: Bad input, a usage error (argparse) or an operating-system error such as a full disk.
EXIT_BAD_INPUT = 2
#: A batch ran but some videos failed (2 is "could not start").
EXIT_SOME_FAILED = 3
EXIT_CANCELLED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM)

PACKAGE_LOGGER = "napari_flow_features"

# Choices offered on the command line. They are the library's own lists (flow/compute.py,
# io/poses.py, model/weights.py), repeated here so that parsing and ``--help`` import neither NumPy
# nor pandas; tests/core/test_cli_package.py checks they are equal.
FLOW_METHODS = ("farneback", "dis", "tvl1", "tvl1-skimage")
DIS_PRESETS = ("ultrafast", "fast", "medium")
POINTS_FORMATS = ("auto", "table", "DeepLabCut", "SLEAP", "LightningPose", "NWB")
CHECKPOINTS = ("flow_imagenet", "flow_scratch", "rgb_imagenet", "rgb_scratch", "rgb_scratch_kin600")


class Console:
    """The command's own output: results on stdout, status lines and progress bars on stderr.

    Parameters
    ----------
    verbosity : int
        -1 with ``--quiet`` (nothing but warnings and errors), 0 by default, 1 or more with
        ``-v``/``-vv``.
    """

    def __init__(self, verbosity: int = 0) -> None:
        self.verbosity = verbosity

    @property
    def quiet(self) -> bool:
        """Whether ``--quiet`` was given."""
        return self.verbosity < 0

    def result(self, text: str) -> None:
        """Print a result line (what was written, a metric) on stdout, unless quiet."""
        if not self.quiet:
            print(text, flush=True)

    def status(self, text: str) -> None:
        """Print a status line (what is happening now) on stderr, unless quiet."""
        if not self.quiet:
            _write_stderr(text)

    def warning(self, text: str, stdout: bool = False) -> None:
        """Print a warning on stderr (or on stdout among the results), also when quiet."""
        if stdout:
            print(text, flush=True)
        else:
            _write_stderr(text)

    def error(self, text: str) -> None:
        """Print an error on stderr, also when quiet."""
        _write_stderr(text)

    def tqdm(self, **kwargs: Any) -> Any:
        """A tqdm progress bar on stderr, disabled when quiet."""
        from tqdm import tqdm

        return tqdm(dynamic_ncols=True, disable=self.quiet, file=sys.stderr, **kwargs)

    def bar(self, desc: str, unit: str = "pair") -> ProgressBar:
        """A progress bar fed by ``progress(done, total)`` callbacks; call ``close()`` at the end."""
        return ProgressBar(self, desc, unit)


class ProgressBar:
    """A tqdm bar created on the first ``progress(done, total)`` call (the total is known then).

    Parameters
    ----------
    console : Console
        Where the bar goes (and whether it is shown at all).
    desc : str
        The bar's label.
    unit : str
        What is counted.
    """

    def __init__(self, console: Console, desc: str, unit: str = "pair") -> None:
        self.console = console
        self.desc = desc
        self.unit = unit
        self._bar: Any = None
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = self.console.tqdm(total=total, desc=self.desc, unit=self.unit)
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        """Close the bar (its last state stays on screen)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._done = 0


#: The console of every command (its verbosity is set for the duration of each ``main()`` call).
console = Console()


@contextmanager
def configured_output(verbosity: int) -> Iterator[Console]:
    """Set the console and the package's logging for one command, and undo both afterwards.

    Parameters
    ----------
    verbosity : int
        -1 quiet (warnings and errors), 0 default (warnings and errors from the library, the
        command's usual output), 1 INFO, 2 or more DEBUG.

    Yields
    ------
    Console
        The console the command prints through.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = BarAwareHandler()
    fmt = "%(message)s" if verbosity <= 0 else "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    logger = logging.getLogger(PACKAGE_LOGGER)
    previous_level, previous_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # one copy of each record, whatever the root logger does
    previous_verbosity, console.verbosity = console.verbosity, verbosity
    try:
        with plain_warnings():  # once each, as "warning: text", above the progress bars
            yield console
    finally:
        console.verbosity = previous_verbosity
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        logger.propagate = previous_propagate


def add_verbosity_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """``-v/--verbose`` (repeatable) and ``-q/--quiet``, on the top-level parser or a sub-command.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to add them to.
    top_level : bool
        The top-level parser stores them in ``verbose``/``quiet``; a sub-command in
        ``sub_verbose``/``sub_quiet``, so neither overwrites the other.
    """
    prefix = "" if top_level else "sub_"
    group = parser.add_argument_group("output")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("-v", "--verbose", action="count", default=0, dest=prefix + "verbose",
                        help="more messages: -v progress details (INFO), -vv debugging (DEBUG)")  # fmt: skip
    choice.add_argument("-q", "--quiet", action="store_true", dest=prefix + "quiet",
                        help="only warnings and errors: no progress bars, no result lines")  # fmt: skip


def verbosity_of(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The verbosity asked for before and after the sub-command (-1 quiet, 0, 1, 2...).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.
    parser : argparse.ArgumentParser
        For the usage error when both ``--quiet`` and ``--verbose`` are given.

    Returns
    -------
    int
        -1 for quiet, else the number of ``-v``.
    """
    verbose = getattr(args, "verbose", 0) + getattr(args, "sub_verbose", 0)
    quiet = getattr(args, "quiet", False) or getattr(args, "sub_quiet", False)
    if quiet and verbose:
        parser.error("-q/--quiet and -v/--verbose exclude each other")
    return -1 if quiet else verbose


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster's time limit, ``kill``), raised like Ctrl-C so every ``finally`` runs."""


_SIGNALLED: list[int] = []  # signals received during this main() call


def _on_signal(signum: int, frame: Any) -> None:
    _SIGNALLED.append(signum)
    if signum == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt()


def terminate_cleanly() -> dict[int, Any]:
    """Raise SIGINT and SIGTERM in the main thread as ``KeyboardInterrupt``/:class:`Terminated`.

    Records each signal as it arrives, so that an error it provokes deep inside a library
    (h5py, zipfile) is still reported as a cancellation.

    Returns
    -------
    dict
        The previous handlers, to restore with :func:`restore_handlers` (empty outside the main
        thread, where signal handlers cannot be set).
    """
    _SIGNALLED.clear()
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def restore_handlers(previous: dict[int, Any]) -> None:
    """Put back the signal handlers :func:`terminate_cleanly` replaced.

    Parameters
    ----------
    previous : dict
        What :func:`terminate_cleanly` returned.
    """
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def exit_code_for(exc: BaseException) -> int | None:
    """The exit status for an exception that ended a command, with its message printed.

    Parameters
    ----------
    exc : BaseException
        What the command raised.

    Returns
    -------
    int or None
        130 after Ctrl-C or a cancel, 143 after SIGTERM, 2 for bad input or an operating-system
        error (a full disk, a missing folder); ``None`` for anything else (a bug: the caller
        re-raises it, so its traceback is shown and the exit status is 1).
    """
    # A signal raised at an arbitrary point may surface as another error from the library
    # it interrupted: the run was stopped, not broken.
    if _SIGNALLED or isinstance(exc, (CancelledError, KeyboardInterrupt)):
        if signal.SIGTERM in _SIGNALLED or isinstance(exc, Terminated):
            console.error("flow-features: terminated (SIGTERM); temporary files removed")
            return EXIT_TERMINATED
        console.error("flow-features: cancelled")
        return EXIT_CANCELLED
    if isinstance(exc, BrokenPipeError):
        # The reader went away (`flow-features cache info | head -1`): nothing more to say, and
        # Python must not complain when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if isinstance(exc, (BadInputError, OSError)):
        console.error(f"flow-features: error: {exc}")
        return EXIT_BAD_INPUT
    return None


def number(kind: type, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> Callable[[str], Any]:  # fmt: skip
    """An argparse type: a ``kind`` number within [low, high] (open ends when asked).

    0 is a value like any other, never "unset", so an option's 0 outside its range is an error.

    Parameters
    ----------
    kind : type
        ``int`` or ``float``.
    low, high : float, optional
        The bounds (none when ``None``).
    low_open, high_open : bool
        Exclude the bound itself.

    Returns
    -------
    callable
        Parses a string, raising ``argparse.ArgumentTypeError`` with the allowed range.
    """

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole number' if kind is int else 'number'}"
            ) from None
        if kind is float and value != value:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            lo = "" if low is None else f"{'>' if low_open else '≥'} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '≤'} {high:g}"
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: must be {' and '.join(v for v in (lo, hi) if v)}"
            )
        return value

    parse.__name__ = f"{kind.__name__} range"
    return parse


POSITIVE_INT = number(int, 1)
NON_NEGATIVE_INT = number(int, 0)
POSITIVE_FLOAT = number(float, 0, low_open=True)
FRACTION = number(float, 0, 1, high_open=True)  # 0: no validation split


def parse_features(text: str) -> list[int]:
    """The channel numbers of ``--features`` ("0,10,20").

    Parameters
    ----------
    text : str
        Comma-separated whole numbers.

    Returns
    -------
    list of int
        The channels.
    """
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInputError(
            f"--features takes channel numbers like 0,10,20, not {text!r}"
        ) from None


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """The region of ``--roi x,y,w,h`` in whole video pixels (``None`` when not given).

    Parameters
    ----------
    text : str or None
        The option's value.

    Returns
    -------
    tuple of int or None
        ``(x, y, w, h)``.
    """
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        raise BadInputError(f"--roi takes x,y,w,h in whole pixels, got {text!r}") from None
    if len(values) != 4:
        raise BadInputError(f"--roi takes four numbers x,y,w,h, got {text!r}")
    return values[0], values[1], values[2], values[3]


def defaults_of(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Every option's default, by destination (to tell options given from options left alone).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        A sub-command's parser.

    Returns
    -------
    dict
        ``{dest: default}``.
    """
    return {a.dest: a.default for a in parser._actions if a.dest != "help"}


def add_flow_options(p: argparse.ArgumentParser) -> None:
    """The optical-flow options of ``flow`` and ``sequences compute``.

    Their defaults are ``extract``'s (DIS, medium preset, frames resized to 256 px on the longest
    side), so a flow file made with them and then given to ``extract`` gives the rows that
    ``extract`` gives for the video itself.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The sub-command's parser.
    """
    from ..config import AUTO_MAX_SIDE, ExtractionSettings

    method = ExtractionSettings().flow_method
    p.add_argument("--method", choices=FLOW_METHODS, default=method,
                   help=f"flow method ({method}, as extract's --flow-method)")  # fmt: skip
    p.add_argument("--preset", choices=DIS_PRESETS, default="medium", help="DIS preset (medium)")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--max-side", type=max_side_option, default="auto",
        help=f"resize so the longest side is at most this; auto (default): {AUTO_MAX_SIDE} px, as "
        "extract; 0: the video's own size",
    )  # fmt: skip
    size.add_argument("--scale", type=POSITIVE_FLOAT, help="resize by this factor before flow")
    p.add_argument(
        "--workers",
        type=POSITIVE_INT,
        help="threads for single-threaded methods (default: cores, max 2)",
    )


def flow_max_side(args: argparse.Namespace) -> int | None:
    """The longest side the flow options ask for: ``None`` for the video's own size.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options of :func:`add_flow_options`.

    Returns
    -------
    int or None
        Pixels (``auto``: :data:`~napari_flow_features.config.AUTO_MAX_SIDE`), or ``None`` for
        ``--max-side 0`` or with ``--scale``.
    """
    from ..config import AUTO_MAX_SIDE

    if args.scale is not None:
        return None
    return AUTO_MAX_SIDE if args.max_side == "auto" else (args.max_side or None)


def flow_computer(args: argparse.Namespace) -> Any:
    """The :class:`~napari_flow_features.flow.compute.OpticalFlowComputer` the flow options ask for.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options of :func:`add_flow_options`.

    Returns
    -------
    OpticalFlowComputer
        Ready to ``compute(video, output, progress=...)``.
    """
    from ..flow.compute import OpticalFlowComputer

    return OpticalFlowComputer(
        method=args.method,
        preset=args.preset,
        max_side=flow_max_side(args),
        scale=args.scale,
        workers=args.workers,
    )


def extractor_from(args: argparse.Namespace, **overrides: Any) -> Any:
    """The :class:`DynamicFeatureExtractor` of ``--config`` with ``--endpoint``/``--clip-length``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options (``config``, and ``endpoint``/``clip_length`` when the command has them).
    **overrides
        Further settings (weights, stride...).

    Returns
    -------
    DynamicFeatureExtractor
        The built extractor.
    """
    from .._tf_env import import_tensorflow_quietly
    from ..model.extractor import DynamicFeatureExtractor

    import_tensorflow_quietly()  # without the CUDA probing lines on a machine with no GPU
    if getattr(args, "endpoint", None):
        overrides["endpoint"] = args.endpoint
    if getattr(args, "clip_length", None) is not None:
        overrides["clip_length"] = args.clip_length
    return DynamicFeatureExtractor(args.config, **overrides)


def extractor_for(config: Any) -> Any:
    """The :class:`DynamicFeatureExtractor` of a run's encoder configuration, TensorFlow quiet.

    Parameters
    ----------
    config : ExtractorConfig
        The settings' ``extractor``.

    Returns
    -------
    DynamicFeatureExtractor
        The built extractor.
    """
    from .._tf_env import import_tensorflow_quietly
    from ..model.extractor import DynamicFeatureExtractor

    import_tensorflow_quietly()  # without the CUDA probing lines on a machine with no GPU
    return DynamicFeatureExtractor(config=config)


def max_side_option(text: str) -> int | str:
    """``--max-side``: ``auto``, 0 (the video's size) or a longest side in pixels.

    Parameters
    ----------
    text : str
        The option's value.

    Returns
    -------
    int or str
        ``"auto"``, or the number (0: the video's own size).
    """
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--max-side takes auto, 0 (the video's size) or pixels, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--max-side must be at least 0, got {value}")
    return value


def output_folder(path: str) -> Path:
    """An ``--output-dir`` that is not a file (it may not exist yet).

    Parameters
    ----------
    path : str
        The option's value.

    Returns
    -------
    Path
        The folder.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--output-dir is a file, not a folder: {out}")
    return out
