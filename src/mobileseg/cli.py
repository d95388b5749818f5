"""``mobileseg <command> key=value ...``: one command shape for every task; each command calls the Python API.

``--key value``, ``--key=value`` and a bare ``--flag`` (= true) are read as ``key=value`` too, and a bare
argument fills the command's main key (the dataset for train/check-data, the source for predict, the weights for
val/test/export/benchmark/serve when it names a model file).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from mobileseg._version import __version__
from mobileseg.errors import MobilesegError

COMMANDS: dict[str, str] = {
    "train": "train a model (data=<yaml|folder|preset>, default: the bundled pets sample)",
    "val": "evaluate weights=<best.pt> on the val split",
    "test": "evaluate weights=<best.pt> on the test split",
    "predict": "segment new images: weights=<best.pt|model.onnx> source=<file|folder|glob|list>",
    "export": "export weights=<best.pt> to format=onnx|torchscript (int8=true for int8 ONNX)",
    "benchmark": "measure inference speed of weights=<best.pt> (PyTorch, ONNX Runtime fp32/int8)",
    "check-data": "check a dataset: counts, sizes, mask values, and every problem with its file",
    "convert": "polygon labels to masks: labels=<coco.json|labelme folder> [images=<coco images>] out=<folder>",
    "serve": "web page + HTTP API for a model: weights=<best.pt|model.onnx> [host=127.0.0.1] [port=8000]",
}

USAGE = """usage: mobileseg <command> [key=value ...] [cfg=<config.yaml>]

commands:
{commands}

examples:
  mobileseg train epochs=1                                  # the bundled pets sample
  mobileseg train preset=oxford_pets data=path/to/oxford_pets epochs=30 encoder_weights=path/to/weights.pt
  mobileseg test weights=runs/train/exp/weights/best.pt
  mobileseg predict weights=runs/train/exp/weights/best.pt source=images/
  mobileseg check-data preset=camvid data=path/to/camvid

Run 'mobileseg <command> --help' for the keys a command reads, with defaults."""


def _usage() -> str:
    return USAGE.format(commands="\n".join(f"  {k:<11} {v}" for k, v in COMMANDS.items()))


def parse_args(command: str, argv: list[str]) -> list[str]:
    """Normalise argv to ``key=value`` strings (``--key value``, ``--flag``, positionals)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            body = arg[2:].replace("-", "_")
            if "=" in body:
                out.append(body)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--") and "=" not in argv[i + 1]:
                out.append(f"{body}={argv[i + 1]}")
                i += 1
            else:
                out.append(f"{body}=true")
        elif "=" in arg:
            out.append(arg)
        else:
            out.append(f"{_positional_key(command, arg)}={arg}")
        i += 1
    return out


def _positional_key(command: str, arg: str) -> str:
    if command == "predict":
        return "source"
    if command in ("val", "test", "export", "benchmark", "serve") and arg.endswith((".pt", ".onnx", ".pth")):
        return "weights"
    return "data"


def _split_cfg(args: list[str]) -> tuple[str | None, list[str]]:
    cfg = None
    rest = []
    for a in args:
        if a.startswith("cfg="):
            cfg = a[4:]
        else:
            rest.append(a)
    return cfg, rest


def _run(command: str, args: list[str]) -> int:
    from mobileseg import commands as mobileseg
    from mobileseg.config import load_config

    cfg_file, overrides = _split_cfg(args)
    given = [a.split("=", 1) for a in overrides]
    keys = [k for k, _ in given]
    if command == "test":  # the loaded config cannot tell a split=val given from the default: look at the keys
        split_keys = ("split", "runtime.split")
        mobileseg.check_test_split(next((v for k, v in given if k in split_keys), None))
        keys = [k for k in keys if k not in split_keys]  # refused above unless 'test', which test does: not unread
    cfg = load_config(cfg_file, overrides)  # unknown keys and bad values stop here, before the check below
    _warn_unread(command, keys)
    actions: dict[str, Callable[[], Any]] = {
        "train": lambda: mobileseg.train(cfg),
        "val": lambda: mobileseg.val(cfg, split=cfg.runtime.split),
        "test": lambda: mobileseg.test(cfg),
        "predict": lambda: mobileseg.predict(cfg),
        "export": lambda: mobileseg.export(cfg),
        "benchmark": lambda: mobileseg.benchmark(cfg),
        "serve": lambda: mobileseg.serve(cfg),
        "convert": lambda: mobileseg.convert(cfg),
    }
    if command == "check-data":
        report = mobileseg.check_data(cfg)
        print(report.format())
        return 0 if report.ok else 1
    result = actions[command]()
    if command == "train" and getattr(result, "stopped", "") == "interrupted":
        return 130
    if command == "predict" and result.skipped:  # the readable images are written; a script must still notice
        total = len(result.results) + len(result.skipped)
        print(
            f"mobileseg predict: {len(result.skipped)} of {total} inputs could not be read (named above): "
            "exit status 1",
            file=sys.stderr,
        )
        return 1
    return 0


def _warn_unread(command: str, keys: list[str]) -> None:
    """Say which typed keys this command does not read: ``predict imgsz=512`` is valid config but does nothing
    (the model fixes its input size), and a silent no-op looks like a setting that took effect."""
    from mobileseg.config_help import unread_keys

    unread = unread_keys(command, keys)
    if unread:
        verb, have = ("is", "has") if len(unread) == 1 else ("are", "have")
        print(
            f"mobileseg {command}: warning: {', '.join(unread)} {verb} not read by '{command}' and {have} no effect "
            f"('mobileseg {command} --help' lists the keys it reads)",
            file=sys.stderr,
        )


def command_help(command: str) -> str:
    """``mobileseg <command> --help``: the keys this command reads (not all 70), each with default and meaning."""
    from mobileseg.config_help import key_help

    return (
        f"usage: mobileseg {command} [key=value ...] [cfg=<config.yaml>]\n\n{COMMANDS[command]}\n\n"
        f"keys (short or dotted: batch=16 or train.batch=16; lists as 0.8,0.1,0.1; empty = none):\n"
        f"{key_help(command)}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"mobileseg {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"mobileseg: unknown command '{command}'.{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") for a in rest):
        print(command_help(command))
        return 0
    try:
        return _run(command, parse_args(command, rest))
    except KeyboardInterrupt:
        print("\nmobileseg: interrupted", file=sys.stderr)
        return 130
    except (MobilesegError, OSError) as e:  # worded for the user: one line (MOBILESEG_DEBUG=1 shows the traceback)
        if os.environ.get("MOBILESEG_DEBUG"):
            raise
        print(f"mobileseg {command}: error: {e}", file=sys.stderr)
        return 1
    except Exception:  # anything else is a bug: show where, and ask for a report
        traceback.print_exc()
        print(
            f"\nmobileseg {command}: an internal error occurred (mobileseg {__version__}). This is a bug, not "
            f"something you did: please report it with the traceback above and the command you ran.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
