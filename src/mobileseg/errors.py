"""One family of errors for everything a user can cause: a bad config, dataset, model file or export.

The command line prints these as one line (the message already names the file and the fix) and shows a full
traceback, with a request to report it, for anything else: an error outside this family is a bug in mobileseg
or a library, and hiding its traceback would hide the bug.

Each class also derives from the builtin exception it replaced (``ValueError``, ``RuntimeError``,
``FileNotFoundError``), so code that caught those keeps working.

Example:
    >>> from mobileseg.errors import DataError, MobilesegError
    >>> issubclass(DataError, MobilesegError) and issubclass(DataError, ValueError)
    True
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path


class MobilesegError(Exception):
    """Base of every error worded for the user (no traceback needed)."""


class ConfigError(MobilesegError, ValueError):
    """A configuration problem: an unknown key, a value out of range, a combination that cannot work."""


class DataError(MobilesegError, ValueError):
    """A problem with the dataset or an input image, naming the file(s) concerned."""


class WeightsError(MobilesegError, RuntimeError):
    """A weights, checkpoint or exported model file could not be used; the message says why and what to do."""


class MissingFileError(MobilesegError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class DiskFullError(MobilesegError, OSError):
    """A file could not be written because the disk (or quota) is full; the previous file is intact."""


class ExportError(MobilesegError, RuntimeError):
    """An export failed or does not compute what the PyTorch model computes; the message has the figures."""


class TrainingError(MobilesegError, RuntimeError):
    """Training cannot go on (or start) for a reason the user can act on."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN/inf: the run stops, and the last good checkpoint stays as it was."""


def run_script(main: Callable[[], int | None]) -> int:
    """Run a script's ``main`` as the command line runs a command: a user error is one line, a bug a traceback.

    Why: the scripts in ``benchmarks/`` call the public API, whose errors for a missing checkpoint or a bad
    dataset already name the file and the fix; printed under a traceback that message is easy to miss and looks
    like a crash. ``MOBILESEG_DEBUG=1`` shows the traceback anyway. Anything outside
    :class:`MobilesegError` propagates untouched.

    Returns:
        ``main``'s exit status (0 when it returns None), or 1 after printing a user error; for ``sys.exit``.

    Example:
        >>> def main():
        ...     raise MissingFileError("weights file not found: best.pt")
        >>> run_script(main)  # prints "<script>: error: weights file not found: best.pt" to stderr
        1
    """
    try:
        return int(main() or 0)
    except MobilesegError as e:
        if os.environ.get("MOBILESEG_DEBUG"):
            raise
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        return 1


__all__ = [
    "ConfigError",
    "DataError",
    "DiskFullError",
    "ExportError",
    "MissingFileError",
    "MobilesegError",
    "NonFiniteLossError",
    "TrainingError",
    "WeightsError",
    "run_script",
]
