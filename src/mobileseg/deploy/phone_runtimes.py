"""Phone runtimes as backends: ExecuTorch (``.pte``) and LiteRT (``.tflite``) files run in their own runtimes.

The same C++ runtimes and XNNPACK kernels as on a phone, driven from Python: predict/val/serve/benchmark use a
phone file like an ONNX one, and the exports check their parity with them. The 'mobile' extra brings the
runtimes; without it, one line says what to install.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobileseg.errors import ExportError, WeightsError

METADATA_KEY = "mobileseg_metadata"  # ExecuTorch constant method / TFLite metadata entry holding the JSON


EXTRA_HINT = "pip install 'mobileseg[mobile]'"


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence warnings and library logging (not ONNX Runtime's own: see :func:`mobileseg.deploy.runtimes.quiet`);
    errors still raise.

    Needs no runtime, so the phone exports use it: the 'mobile' extra does not bring onnxruntime.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.disable(previous)


# What TensorFlow's and LiteRT's C++ code writes straight to file descriptor 2 on every export or model load:
# absl's notice that logging was never initialised, its INFO lines ("I0000 00:00:... port.cc:153] oneDNN custom
# operations are on ...", "flatbuffer_export.cc:...] Estimated count of arithmetic ops"), TFLite's XNNPACK notice and
# ExecuTorch's threadpool set-up ("[cpuinfo_utils.cpp:87] Failed to open midr file ...": ARM files probed on x86).
NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|\[cpuinfo_utils\.cpp:\d+\] .*|\[threadpool\.cpp:\d+\] Resetting threadpool to \d+ threads\."
)


@contextlib.contextmanager
def native_log_filter(noise: re.Pattern[str] = NATIVE_NOISE) -> Iterator[None]:
    """Drop the lines matching ``noise`` that C/C++ code writes to stderr (fd 2) inside the block; pass on the rest.

    Why: :func:`quiet_libraries` reaches Python's warnings and logging only; TensorFlow and LiteRT log from C++
    straight to the file descriptor, four lines of developer notices on every ``format=tflite`` export. fd 2 is
    pointed at a pipe whose reader thread forwards every other line at once (a warning or a crash message still
    shows, in order), so only the known notices go. Without a usable fd 2 the block runs unfiltered.

    The cost: should the C++ code abort the process inside the block, its last lines may die in the pipe with
    it. ``MOBILESEG_DEBUG=1`` (which also shows tracebacks) turns the filter off to see everything.
    """
    if os.environ.get("MOBILESEG_DEBUG"):
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    read_end, write_end = os.pipe()

    def forward() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not noise.fullmatch(line.decode(errors="replace").rstrip("\r\n")):
                    os.write(saved, line)

    reader = threading.Thread(target=forward, name="mobileseg-native-log-filter", daemon=True)
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees the end and stops
        reader.join()
        os.close(saved)


def require(module: str, what: str) -> Any:
    """Import ``module`` or raise one line naming the extra: ``format=executorch needs the 'mobile' extra: ...``.

    Imported with library warnings and logging silenced: litert_torch's import logs a torch deprecation notice
    (``register_constant()`` on an Enum) meant for its developers, the first line a user exporting would see, and
    TensorFlow's C++ notices (:func:`native_log_filter`)."""
    try:
        with quiet_libraries(), native_log_filter():
            return importlib.import_module(module)
    except ImportError as e:
        raise ExportError(f"{what} needs the 'mobile' extra: {EXTRA_HINT}") from e


class MobileBackend:
    """Common part of the phone-runtime backends: batch-1 graph, fixed size, logits/probs/mask outputs.

    Subclasses implement :meth:`run_one` (one (1, 3, H, W) float32 image -> the graph's output as a tensor) and
    set ``self.path`` and ``self.metadata``.
    """

    kind = "mobile"
    path: Path
    metadata: dict[str, str]

    @property
    def outputs(self) -> str:
        return self.metadata.get("outputs", "logits")

    @property
    def imgsz(self) -> tuple[int, int] | None:
        size = self.metadata.get("imgsz")
        return tuple(json.loads(size)) if size else None  # type: ignore[return-value]

    def run_one(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def raw(self, images: torch.Tensor) -> torch.Tensor:
        """The graph's output for each image (the graph runs at batch 1), concatenated."""
        x = images.detach().cpu().float().contiguous()
        c = int(self.metadata.get("in_channels", 3))
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"{self.path}: expected images (N, {c}, H, W), got {tuple(x.shape)}")
        if self.imgsz and tuple(x.shape[2:]) != self.imgsz:
            h, w = self.imgsz
            raise ValueError(
                f"{self.path} was exported for {h}x{w} input (fixed size); got {x.shape[2]}x{x.shape[3]}: "
                f"resize the images to {h}x{w} first"
            )
        return torch.cat([self.run_one(x[i : i + 1]) for i in range(x.shape[0])])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """float32 (N, 3, H, W) in [0, 1] -> float32 logits (N, C, H, W), the Backend protocol.

        A ``probs`` graph's probabilities are turned back into logits (log-odds / log; saturated probabilities
        give infinite logits, whose sigmoid/softmax is exact again), so predict and serve work unchanged. A
        ``mask`` graph has no logits to give: ValueError (use :meth:`raw` for its uint8 (N, H, W) class map).
        """
        if self.outputs == "mask":
            raise ValueError(f"{self.path} returns class maps (outputs=mask), not logits: use .raw(images)")
        out = self.raw(images).float()
        return probs_to_logits(out) if self.outputs == "probs" else out


def probs_to_logits(probs: torch.Tensor) -> torch.Tensor:
    """Logits whose sigmoid / softmax gives ``probs`` back (for code that expects logits from a probs graph)."""
    probs = probs.double()
    logits = probs.log() - (1 - probs).log() if probs.shape[1] == 1 else probs.log()
    return logits.float()


def one_line(e: BaseException) -> str:
    """The first line of an exception's message, trimmed (runtime errors can be pages of C++ context)."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def read_pte_metadata(path: str | Path) -> dict[str, str]:
    """The ``mobileseg_metadata`` JSON of a ``.pte`` as a dict ({} if the program has none)."""
    return ExecutorchBackend(path).metadata


class ExecutorchBackend(MobileBackend):
    """A ``.pte`` run by ExecuTorch's Python runtime (the same C++ runtime and XNNPACK kernels as on a phone).

    Args:
        path: the ``.pte`` file.
        threads: size of ExecuTorch's threadpool. It is process-wide (``_unsafe_reset_threadpool``), so it is
            only changed when given.

    Raises:
        ExportError: the 'mobile' extra is missing.
        WeightsError: the file is not a loadable ExecuTorch program.

    Example:
        >>> backend = ExecutorchBackend("best.pte", threads=2)  # doctest: +SKIP
        >>> backend(torch.rand(1, 3, 224, 224)).shape, backend.metadata["names"]  # doctest: +SKIP
        (torch.Size([1, 1, 224, 224]), '["background", "pet"]')
    """

    kind = "executorch"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        runtime = require("executorch.runtime", "running a .pte model")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        with native_log_filter():  # the threadpool's "[cpuinfo_utils.cpp:71] Reading file ..." lines
            if threads:
                from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

                _unsafe_reset_threadpool(int(threads))
            try:
                program = runtime.Runtime.get().load_program(self.path)
                self.method = program.load_method("forward")
                has_meta = METADATA_KEY in program.method_names
                raw = program.load_method(METADATA_KEY).execute([])[0] if has_meta else "{}"
                self.metadata: dict[str, str] = json.loads(raw)
            except Exception as e:  # the runtime raises RuntimeError with C++ error codes; one line naming the file
                raise WeightsError(
                    f"{self.path} is not a loadable ExecuTorch program ({one_line(e)}); re-export it with "
                    f"'mobileseg export format=executorch'"
                ) from None
        if self.method is None:
            raise WeightsError(f"{self.path} has no 'forward' method")

    def run_one(self, image: torch.Tensor) -> torch.Tensor:
        return self.method.execute([image])[0]


def _metadata_from(buf: bytearray) -> dict[str, str]:
    """The ``mobileseg_metadata`` JSON in a flatbuffer; ValueError saying why when it is not a TFLite model."""
    from ai_edge_litert import schema_py_generated as schema

    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no 'TFL3' identifier)")
    model = schema.Model.GetRootAs(buf, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode() == METADATA_KEY:
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset() > 1:  # stored after the flatbuffer (ai-edge-quantizer writes buffers that way)
                data = bytes(buf[buffer.Offset() : buffer.Offset() + buffer.Size()])
            else:
                data = buffer.DataAsNumpy().tobytes()
            return json.loads(data.decode())
    return {}


def read_tflite_metadata(path: str | Path) -> dict[str, str]:
    """The ``mobileseg_metadata`` JSON of a ``.tflite`` as a dict ({} if it has none); ValueError if unreadable."""
    try:
        return _metadata_from(bytearray(Path(path).read_bytes()))
    except (ValueError, IndexError) as e:  # IndexError/ValueError: a truncated or foreign flatbuffer
        raise ValueError(f"{path}: {one_line(e)}") from None


class LiteRTBackend(MobileBackend):
    """A ``.tflite`` run by the LiteRT interpreter (``ai_edge_litert``) with its default XNNPACK delegate.

    Args:
        path: the ``.tflite`` file.
        threads: interpreter threads (None: LiteRT's default).

    Raises:
        ExportError: the 'mobile' extra is missing.
        WeightsError: the file is not a loadable TFLite model.

    Example:
        >>> backend = LiteRTBackend("best.tflite", threads=2)  # doctest: +SKIP
        >>> backend(torch.rand(1, 3, 224, 224)).shape  # doctest: +SKIP
        torch.Size([1, 1, 224, 224])
    """

    kind = "litert"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        interpreter = require("ai_edge_litert.interpreter", "running a .tflite model")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        try:
            self.metadata: dict[str, str] = _metadata_from(bytearray(self.path.read_bytes()))
            with native_log_filter():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                self.interpreter = interpreter.Interpreter(model_path=str(self.path), num_threads=threads)
                self.interpreter.allocate_tensors()
        except Exception as e:  # ValueError / RuntimeError from the flatbuffer or the C++ interpreter
            raise WeightsError(
                f"{self.path} is not a loadable TFLite model ({one_line(e)}); re-export it with "
                f"'mobileseg export format=tflite'"
            ) from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def run_one(self, image: torch.Tensor) -> torch.Tensor:
        x = image.numpy()
        dtype, (scale, zero_point) = self.input["dtype"], self.input["quantization"]
        if scale:  # an int8 input (full-int8 model): quantize the float image as the graph expects
            limits = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero_point, limits.min, limits.max).astype(dtype)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        scale, zero_point = self.output["quantization"]
        if scale:  # int8 logits/probabilities -> float; a uint8 class map has no scale and stays as it is
            return torch.from_numpy((y.astype(np.float32) - zero_point) * np.float32(scale))
        return torch.from_numpy(y.copy())


__all__ = ["ExecutorchBackend", "LiteRTBackend", "MobileBackend", "read_pte_metadata", "read_tflite_metadata"]
