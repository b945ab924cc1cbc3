"""The ``flow-features`` command line.

One module per sub-command (``sample``, ``demo``, ``flow``, ``sequences``, ``weights``, ``model``,
``extract``, ``evaluate``, ``visualize``, ``map``, ``cache``), each holding only its arguments and
what it prints; the work is done by library functions the Python API and the napari widgets use too.
``_common.py`` holds what they share: output and progress bars, logging (``-v``/``-q``), signal
handling and exit codes (docs/cli.md). Importing this package and ``--help`` import neither
TensorFlow nor NumPy.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from .. import __version__
from . import cache, demo, evaluate, extract, flow, model, sample, sequences, visualize, weights
from . import map as map_command
from ._common import (
    EXIT_CANCELLED,
    EXIT_TERMINATED,
    add_verbosity_options,
    configured_output,
    exit_code_for,
    restore_handlers,
    terminate_cleanly,
    verbosity_of,
)

__all__ = ["build_parser", "entry", "main"]

logger = logging.getLogger(__name__)

#: The sub-commands in the order ``--help`` lists them.
COMMANDS = (sample, flow, sequences, weights, model, extract, evaluate, visualize, map_command,
            demo, cache)  # fmt: skip


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers under ``parser`` that run a command (those without sub-commands of their own)."""
    children = [
        child
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for child in dict.fromkeys(action.choices.values())
    ]
    if not children:
        return [parser]
    return [leaf for child in children for leaf in _leaf_parsers(child)]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command.

    Returns
    -------
    argparse.ArgumentParser
        ``-v``/``-q`` are accepted before the sub-command and after it.
    """
    parser = argparse.ArgumentParser(
        prog="flow-features",
        description="Motion features from video: optical flow, an I3D flow encoder, post-encoders.",
        epilog="Exit status: 0 done, 2 bad input or usage (or a full disk), 3 a batch ran but "
        "some videos failed, 130 Ctrl-C, 143 SIGTERM; 1 is an unexpected error (a bug: the "
        "traceback is printed). See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_verbosity_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    for leaf in _leaf_parsers(parser):
        add_verbosity_options(leaf, top_level=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``flow-features`` with ``argv`` (default: the process's arguments).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name.

    Returns
    -------
    int
        The exit status: 0 done, 2 bad input or a full disk, 3 a batch ran but some videos
        failed, 130 Ctrl-C, 143 SIGTERM. A usage error exits with 2 through ``SystemExit``
        (argparse); an unexpected error is raised with its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = verbosity_of(args, parser)
    previous = terminate_cleanly()
    try:
        with configured_output(verbosity):
            logger.debug("command line: %s", {k: v for k, v in vars(args).items()
                                              if k not in ("func", "extract_defaults")})  # fmt: skip
            try:
                return int(args.func(args) or 0)
            except BaseException as exc:  # every end is reported with its exit code
                code = exit_code_for(exc)
                if code is None:
                    raise
                return code
    finally:
        restore_handlers(previous)


def entry() -> None:
    """The console script: :func:`main`, then exit with its status.

    From then on Ctrl-C and SIGTERM are ignored: the exit status says what :func:`main` did.
    After Ctrl-C or SIGTERM it removes any temporary of this process still on disk, then leaves
    without the interpreter's finalisation, where native thread pools (TensorFlow, OpenVINO)
    could abort the process instead of exiting with 130/143.
    """
    code = main()
    # Everything is written, or stopped and cleaned: a Ctrl-C or SIGTERM during the exit (its
    # native thread pools can take a second) would only turn the status into a death by signal.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    if code in (EXIT_CANCELLED, EXIT_TERMINATED):
        # The run removed what its clean-up clauses saw; a signal that landed between a
        # temporary's creation and its ``try`` left one no clause saw.
        from ..io._atomic import remove_own_temporaries

        remove_own_temporaries()
    # Only a process that holds those pools needs the hard exit: a batch's (its models are in
    # the Dask workers) finalises normally, so multiprocessing cleans up its semaphores rather
    # than its resource tracker warning about them.
    native = any(name in sys.modules for name in ("tensorflow", "openvino", "torch"))
    if code in (EXIT_CANCELLED, EXIT_TERMINATED) and native:
        _remove_autograph_files()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _remove_autograph_files() -> None:
    """Remove the code TensorFlow's autograph wrote to the temporary folder for this process.

    TensorFlow removes these files at interpreter exit (an ``atexit`` hook), which ``os._exit``
    skips; the modules it loaded from them name them.
    """
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if os.path.basename(path).startswith("__autograph_generated_file"):
            with contextlib.suppress(OSError):
                os.unlink(path)
