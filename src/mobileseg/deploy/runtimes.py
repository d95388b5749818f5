"""Open any mobileseg model file as a *backend*: a callable from float32 NCHW images in [0, 1] to logits.

A checkpoint (``.pt``) runs in PyTorch, an ONNX file in ONNX Runtime, a TorchScript archive in PyTorch's JIT.
Every backend comes with the model's :class:`~mobileseg.models.model_file.ModelInfo` (read from the checkpoint
or from the metadata embedded at export), so callers (predict, val/test, benchmark, serve) need nothing else.
A file that is missing, corrupt or not a mobileseg model fails with one :class:`~mobileseg.errors.WeightsError`
line naming it.

Example:
    >>> backend, info, _ = open_model("runs/train/exp/weights/best.onnx")  # doctest: +SKIP
    >>> backend(torch.rand(1, 3, *info.imgsz)).shape  # doctest: +SKIP
    torch.Size([1, 1, 224, 224])
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mobileseg.config import Config, default_threads
from mobileseg.deploy.phone_runtimes import quiet_libraries
from mobileseg.engine.inference_mode import resolve_settings
from mobileseg.engine.predictor import Predictor
from mobileseg.engine.runtime import autocast_dtype, precision_name, setup_threads
from mobileseg.errors import WeightsError
from mobileseg.models.hub import check_model_path
from mobileseg.models.model_file import ModelInfo, load_model

TORCHSCRIPT_SUFFIXES = (".torchscript", ".ts", ".jit")
PHONE_SUFFIXES = (".pte", ".tflite")
EXPORTED_SUFFIXES = (".onnx", *TORCHSCRIPT_SUFFIXES, *PHONE_SUFFIXES)
METADATA_FILE = "mobileseg.json"  # name of the metadata entry inside a TorchScript archive


class Backend(Protocol):
    """Runs the network: float32 NCHW images in [0, 1] -> float32 logits (N, C, H, W) on the CPU."""

    kind: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class TorchBackend:
    """A PyTorch module (eager Segmenter or TorchScript) on a device, in inference mode.

    Args:
        module: the network.
        device: where it runs; inputs are moved there, logits come back to the CPU as float32.
        dtype: autocast dtype of the forward pass (:func:`~mobileseg.engine.runtime.autocast_dtype`: bf16 on
            CPUs with bf16 units, bf16/fp16 on CUDA), None = fp32. Measured on a 2-core AMD EPYC with
            AVX512-BF16, 1 thread (``benchmarks/bf16_inference.py``): bf16 autocast is faster at every shape
            tried, 1.4-1.8x at batch 1 and 1.9-2.3x at batch 8 (224x224 and 352x480, 1 and 12 classes), so it
            is used at any batch size. The logits are cast back to float32 before any softmax/sigmoid/argmax;
            bf16 rounding moves probabilities slightly (<= 1e-4 with random weights), so masks change only for
            pixels near the decision boundary.

    Example:
        compile: ``torch.compile`` the module (the ``compile`` key): each new input shape costs a compilation
            (1-2 minutes for the default model on 2 cores), after which batches run faster; see the README.

        >>> backend = TorchBackend(torch.nn.Conv2d(3, 2, 1), dtype=None)
        >>> backend(torch.rand(1, 3, 8, 8)).dtype, backend.precision
        (torch.float32, 'fp32')
    """

    kind = "torch"

    def __init__(
        self,
        module: torch.nn.Module,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        compile: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        # Measured and not kept: BatchNorm folded into the convolutions (1.03-1.1x), alone or with a pure bf16
        # copy instead of autocast (1.07-1.2x): both cost ~0.004 CamVid test mIoU against autocast's 0.001.
        self.module = module.to(self.device).eval()
        self.compiled = compile and not isinstance(module, torch.jit.ScriptModule)
        if self.compiled:  # inductor with the weights frozen as constants (BatchNorm folded, conv weights prepacked)
            self.module = torch.compile(self.module, options={"freezing": True})

    @property
    def precision(self) -> str:
        """``bf16``, ``fp16`` or ``fp32`` (+ ``compiled``): what runs record beside their figures."""
        return precision_name(self.dtype) + (" compiled" if self.compiled else "")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, torch.float32)
        with torch.inference_mode():
            if self.dtype is None:
                return self.module(x).float().cpu()
            with torch.autocast(self.device.type, dtype=self.dtype):
                out = self.module(x)
            return out.float().cpu()


class OnnxBackend:
    """An ONNX Runtime session with the session options that make it fast on a small CPU."""

    kind = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, device: torch.device | str = "cpu") -> None:
        self.path = Path(path)
        self.session = ort_session(self.path, threads, device)
        self.input_name = self.session.get_inputs()[0].name

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


def ort_session(path: str | Path, threads: int | None = None, device: torch.device | str = "cpu") -> Any:
    """ONNX Runtime session: all graph optimisations, ``threads`` intra-op threads, sequential execution.

    Why these options: the default intra-op pool size is the number of *physical* cores seen by ORT, which can
    exceed what this process may use (containers, shared machines); one inter-op thread and sequential execution
    avoid oversubscribing a small CPU, and ORT_ENABLE_ALL fuses Conv+BN+ReLU and picks the NCHWc kernels.
    Spinning is off: ORT's pool threads otherwise busy-wait after every run, stealing the cores from whatever
    runs next (another session, PyTorch, the web server). Measured on 2 cores: alone, the same images/s with and
    without spinning (fp32 85.6 vs 85.2, int8 210 vs 220); interleaved with other backends, PyTorch's batch-1
    latency measured 53 ms next to spinning ORT sessions and 17.5 ms without them.

    Raises:
        WeightsError: the file is not a readable ONNX model.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: ORT's shape-inference notices are noise to a user
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # InvalidProtobuf, Fail, NoSuchFile...: ORT's own classes, one line for the user
        detail = " ".join(str(e).split())[:200]
        raise WeightsError(f"{path} is not a readable ONNX model (corrupt or truncated?): {detail}") from None


def load_torchscript(path: str | Path) -> tuple[torch.nn.Module, dict[str, str]]:
    """A TorchScript archive and the metadata stored beside the graph (empty when it has none)."""
    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": still the way to load
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:  # PytorchStreamReader errors and friends
        detail = " ".join(str(e).split())[:200]
        raise WeightsError(f"{path} is not a readable TorchScript model (corrupt or truncated?): {detail}") from None
    try:
        meta = json.loads(extra[METADATA_FILE] or "{}")
    except json.JSONDecodeError:
        raise WeightsError(f"{path}: its mobileseg metadata is not valid JSON") from None
    return module, meta


def open_model(
    weights: str | Path,
    device: torch.device | str = "cpu",
    threads: int | None = None,
    amp: bool = True,
    compile: bool = False,
) -> tuple[Backend, ModelInfo, dict[str, Any]]:
    """Open a model: a checkpoint (``.pt``/``.pth``), a ``save_pretrained`` folder, an ONNX or TorchScript export.

    Returns ``(backend, info, checkpoint dict)``; the dict is empty for exported files (they carry no dataset or
    training state), and the checkpoint is read once.

    ``amp`` (the ``amp`` key): a checkpoint's forward pass runs under autocast where it pays (bf16 on CPUs with
    bf16 units, bf16/fp16 on CUDA; see :class:`TorchBackend`); False forces fp32. Exported files run as they
    were exported, whatever ``amp`` says. ``compile`` (the ``compile`` key) runs a checkpoint or TorchScript
    file through ``torch.compile`` (see :class:`TorchBackend`).

    Raises:
        MissingFileError: the file does not exist, or is a folder but not a pretrained one.
        WeightsError: unreadable, corrupt, or without mobileseg metadata.
    """
    path = check_model_path(weights)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        backend = OnnxBackend(path, threads, device)
        return backend, ModelInfo.from_metadata(backend.metadata, str(path)), {}
    if suffix in TORCHSCRIPT_SUFFIXES:
        module, meta = load_torchscript(path)
        return TorchBackend(module, device, compile=compile), ModelInfo.from_metadata(meta, str(path)), {}
    if suffix in PHONE_SUFFIXES:
        phone = open_phone_model(path, threads)
        if phone.outputs == "mask":
            raise WeightsError(
                f"{path} returns class maps (exported with outputs=mask), which predict/val/serve cannot blend; "
                f"export it with outputs=logits (or probs) to use it here"
            )
        return phone, ModelInfo.from_metadata(phone.metadata, str(path)), {}
    model, info, ckpt = load_model(path)
    return TorchBackend(model, device, autocast_dtype(device, amp), compile), info, ckpt


def open_phone_model(path: str | Path, threads: int | None = None) -> Any:
    """An ExecuTorch (``.pte``) or LiteRT (``.tflite``) file in its own runtime (the 'mobile' extra)."""
    from .phone_runtimes import ExecutorchBackend, LiteRTBackend  # the runtimes load only when a file needs them

    return (ExecutorchBackend if Path(path).suffix.lower() == ".pte" else LiteRTBackend)(path, threads)


def load_predictor(
    weights: str | Path,
    device: torch.device | str = "cpu",
    conf: float = 0.5,
    tta: bool | str = False,
    threads: int | None = None,
    config: Config | None = None,
    amp: bool | None = None,
) -> Predictor:
    """A :class:`~mobileseg.engine.predictor.Predictor` for any model file (see :func:`open_model`).

    ``config`` (a command's config) sets the inference mode on top of the one the model records: ``infer``,
    ``window``, ``overlap``, ``blend``, ``train_scale``, ``tta``, ``tta_scales`` (see
    :func:`mobileseg.engine.inference_mode.resolve_settings`); without it, the recorded mode with ``tta``.
    ``amp`` (None = the config's ``amp`` key, else true) picks bf16/fp16 autocast for a checkpoint where it pays;
    False forces fp32 (see :func:`open_model`).

    Example:
        >>> p = load_predictor("runs/train/exp/weights/best.pt", threads=2)  # doctest: +SKIP
        >>> p.predict_image("cat.jpg").shares  # doctest: +SKIP
        {'background': 0.71, 'pet': 0.29}
    """
    if threads:  # as the commands set them up: intra-op threads, one interop thread, freed blocks kept
        setup_threads(threads)
    if amp is None:
        amp = config.train.amp if config is not None else True
    compile = config.predict.compile if config is not None else False
    backend, info, _ = open_model(weights, device, threads, amp, compile)
    settings = resolve_settings(config, info) if config is not None else None
    return Predictor(backend, info, conf=conf, tta=tta, weights=Path(weights), settings=settings)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter/quantizer chatter (tracer and deprecation warnings, ORT notices); errors still raise."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    with quiet_libraries():
        yield


__all__ = [
    "EXPORTED_SUFFIXES",
    "PHONE_SUFFIXES",
    "METADATA_FILE",
    "TORCHSCRIPT_SUFFIXES",
    "Backend",
    "OnnxBackend",
    "TorchBackend",
    "load_predictor",
    "load_torchscript",
    "open_model",
    "open_phone_model",
    "ort_session",
    "quiet",
    "quiet_libraries",
]
