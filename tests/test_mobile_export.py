"""Phone exports: ExecuTorch .pte and LiteRT .tflite, fp32 and int8, logits/probs/mask, run in their runtimes.

Each export is slow (torch.export + lowering: 30-80 s on a busy 2-core machine), so each (format, classes, int8,
outputs) combination is exported once per module and several tests read it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mobileseg.engine.metrics import logits_to_pred
from mobileseg.errors import ExportError
from mobileseg.models import Segmenter
from mobileseg.models.model_file import ModelInfo
from mobileseg.models.weights import WeightsError

pytestmark = pytest.mark.usefixtures("one_thread")

IMGSZ = (64, 64)


def shapes_images(n: int, seed: int) -> torch.Tensor:
    """Dark noise with bright coloured rectangles, float (n, 3, 64, 64): images like the training data."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, *IMGSZ, generator=g) * 0.25
    colours = torch.tensor([[0.8, 0.25, 0.25], [0.25, 0.8, 0.25], [0.25, 0.25, 0.8]])
    for i in range(n):
        for c in range(2):
            y, x = torch.randint(0, 32, (2,), generator=g).tolist()
            h, w = torch.randint(16, 32, (2,), generator=g).tolist()
            images[i, :, y : y + h, x : x + w] = colours[(i + c) % 3].view(3, 1, 1)
    return images


def make_model(num_classes: int) -> Segmenter:
    """A tiny random-init model whose head is scaled to a trained model's logit range (masks are not one class)."""
    torch.manual_seed(num_classes)
    model = Segmenter(num_classes, width_mult=0.35, encoder_weights=None).eval()
    with torch.no_grad():
        model.decoder.head.weight.mul_(60)
    return model


def info_for(model: Segmenter) -> ModelInfo:
    names = ["background", "shape"] if model.binary else ["bg", "red", "green"]
    return ModelInfo.build(names, IMGSZ, model.binary, model.num_classes)


CALIB = shapes_images(8, seed=1)
TEST = shapes_images(3, seed=2)  # 3 images: the batch-1 graphs are looped over a batch
MODELS = {1: make_model(1), 3: make_model(3)}


def probs(logits: torch.Tensor) -> torch.Tensor:
    return logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(1)


# ------------------------------------------------------------------------------------------------- exports
# (format, classes, int8, outputs): each format covers binary fp32 and 3-class int8, and a mask graph; between them
# the two cover every output (tflite's logits: the command test below). Four exports, not the full matrix: each
# costs 30-80 s.
CASES = [
    ("executorch", 1, False, "logits"),
    ("executorch", 3, True, "mask"),
    ("tflite", 1, False, "mask"),
    ("tflite", 3, True, "probs"),
]


def _module(fmt: str):
    """The format's module, or skip when its packages (the 'mobile' extra) are not installed."""
    if fmt == "executorch":
        pytest.importorskip("executorch.exir")
        from mobileseg.deploy import executorch

        return executorch
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert.interpreter")
    pytest.importorskip("ai_edge_quantizer")
    from mobileseg.deploy import litert

    return litert


def _export(fmt: str, path: Path, model: Segmenter, **kwargs) -> Path:
    mod = _module(fmt)
    export = mod.export_executorch if fmt == "executorch" else mod.export_tflite
    return export(model, path, info_for(model), calib_images=CALIB, check_images=TEST, **kwargs)


def _backend(fmt: str, path: Path):
    mod = _module(fmt)
    return mod.ExecutorchBackend(path) if fmt == "executorch" else mod.LiteRTBackend(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(case) -> (path, seconds)``, exporting each case on first use."""
    import time

    folder = tmp_path_factory.mktemp("mobile")
    done: dict[tuple, tuple[Path, float]] = {}

    def get(case: tuple) -> tuple[Path, float]:
        if case not in done:
            fmt, classes, int8, outputs = case
            suffix = ".pte" if fmt == "executorch" else ".tflite"
            path = folder / f"m{classes}_{'int8' if int8 else 'fp32'}_{outputs}{suffix}"
            start = time.perf_counter()
            _export(fmt, path, MODELS[classes], int8=int8, outputs=outputs)
            done[case] = (path, time.perf_counter() - start)
        return done[case]

    return get


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}cls-{'int8' if c[2] else 'fp32'}-{c[3]}")
def test_export_runs_in_its_runtime_and_matches_pytorch(exported, case, capsys):
    fmt, classes, int8, outputs = case
    path, seconds = exported(case)
    with capsys.disabled():
        print(f"\n  export {path.name}: {seconds:.1f} s, {path.stat().st_size / 1e6:.1f} MB")
    model = MODELS[classes]
    backend = _backend(fmt, path)
    meta = backend.metadata
    assert meta["outputs"] == outputs and meta["dynamic_hw"] == "false" and meta["batch"] == "1"
    assert ModelInfo.from_metadata(meta, str(path)).names == info_for(model).names
    assert ("int8" in meta["quantization"]) == int8

    with torch.inference_mode():
        ref = model(TEST)
    want = logits_to_pred(ref, 0.5)
    got = backend.raw(TEST)
    assert got.shape[0] == TEST.shape[0]  # a batch of 3 through a batch-1 graph
    if outputs == "mask":
        assert got.dtype == torch.uint8 and got.shape == want.shape
        assert (got.long() == want).float().mean().item() >= (0.97 if int8 else 0.99)
        with pytest.raises(ValueError, match="outputs=mask"):
            backend(TEST)  # the Backend protocol promises logits; a mask graph says why it cannot
        return
    assert got.dtype == torch.float32 and got.shape == ref.shape
    p = got if outputs == "probs" else probs(got)
    pred = logits_to_pred(p.logit() if p.shape[1] == 1 else p.log(), 0.5)
    if int8:
        agreement = (pred == want).float().mean().item()
        assert agreement >= 0.97, agreement
        assert 0 < (p - probs(ref)).abs().max().item()  # really quantized, not a float graph
    else:
        assert (p - probs(ref)).abs().max().item() <= 1e-3
        assert (pred == want).float().mean().item() >= 0.999
    if outputs == "probs":  # the Backend protocol (predict, serve) still gets logits: sigmoid/softmax gives p back
        logits = backend(TEST)  # (renormalised: int8 probabilities step by ~1/256 and need not sum to exactly 1)
        assert torch.allclose(probs(logits), p, atol=1e-2 if int8 else 1e-6)
        assert torch.equal(logits_to_pred(logits, 0.5), pred)


def test_int8_file_is_smaller(exported):
    """int8 weights: the quantized file is well under half the size of float32 (4 bytes -> 1 per weight).

    The two files differ in classes too (3 vs 1: 578 more of the ~1.93 M weights) and in their output head.
    """
    for fmt in ("executorch", "tflite"):
        _module(fmt)
        int8_path, _ = exported(next(c for c in CASES if c[0] == fmt and c[2]))
        fp32_path, _ = exported(next(c for c in CASES if c[0] == fmt and not c[2]))
        assert int8_path.stat().st_size < 0.5 * fp32_path.stat().st_size


def test_wrong_input_size_names_the_expected_size(exported):
    _module("executorch")
    path, _ = exported(("executorch", 1, False, "logits"))
    with pytest.raises(ValueError, match="64x64"):
        _backend("executorch", path)(torch.rand(1, 3, 96, 96))


# ------------------------------------------------------------------------------------------------- failures
def test_failed_parity_removes_the_file(exported, tmp_path):
    """A file that does not compute what the model computes is refused and deleted."""
    from mobileseg.deploy.mobile import verify_or_remove

    _module("executorch")
    path, _ = exported(("executorch", 1, False, "logits"))
    copy = shutil.copy(path, tmp_path / "copy.pte")
    other = make_model(1)
    with torch.no_grad():
        other.decoder.head.bias.add_(5.0)  # another model: every probability moves
    with pytest.raises(ExportError, match="does not match the PyTorch model.*removed"):
        verify_or_remove(Path(copy), other, lambda p: _backend("executorch", p), TEST, False, 0.5, "test", None)
    assert not Path(copy).exists()


@pytest.mark.parametrize("fmt,suffix", [("executorch", ".pte"), ("tflite", ".tflite")])
def test_corrupt_file_is_one_clear_error(tmp_path, fmt, suffix):
    _module(fmt)
    bad = tmp_path / f"broken{suffix}"
    bad.write_bytes(b"this is not a model" * 10)
    with pytest.raises(WeightsError) as info:
        _backend(fmt, bad)
    message = str(info.value)
    assert str(bad) in message and "\n" not in message


@pytest.mark.parametrize(
    "fmt,module", [("executorch", "executorch.exir"), ("tflite", "litert_torch")], ids=["executorch", "tflite"]
)
def test_missing_extra_names_the_extra(monkeypatch, tmp_path, fmt, module):
    from mobileseg.deploy import executorch, litert

    monkeypatch.setitem(sys.modules, module, None)  # import of a None entry raises ImportError
    export = executorch.export_executorch if fmt == "executorch" else litert.export_tflite
    with pytest.raises(ExportError) as info:
        export(MODELS[1], tmp_path / "m", info_for(MODELS[1]))
    assert str(info.value) == f"format={fmt} needs the 'mobile' extra: pip install 'mobileseg[mobile]'"


def test_int8_without_calibration_images_says_so(tmp_path):
    _module("executorch")
    from mobileseg.deploy.executorch import export_executorch

    with pytest.raises(ExportError, match="calibration images"):
        export_executorch(MODELS[1], tmp_path / "m.pte", info_for(MODELS[1]), int8=True)
    assert not (tmp_path / "m.pte").exists()


def test_export_head_mask_matches_logits_to_pred():
    """The in-graph head is exactly the library's post-processing (threshold in logit space, argmax)."""
    from mobileseg.deploy.heads import ExportHead

    for classes, conf in ((1, 0.5), (1, 0.8), (3, 0.5)):
        model = MODELS[classes]
        with torch.inference_mode():
            logits = model(TEST)
            mask = ExportHead(model, "mask", conf=conf)(TEST)
            p = ExportHead(model, "probs")(TEST)
        assert mask.dtype == torch.uint8 and torch.equal(mask.long(), logits_to_pred(logits, conf))
        assert torch.allclose(p, probs(logits))
    with pytest.raises(ValueError, match="outputs='heatmap'"):
        ExportHead(MODELS[1], "heatmap")


def test_the_commands_export_predict_and_evaluate_a_phone_file(tmp_path, capsys):
    """`mobileseg export format=tflite` on a trained checkpoint, then the .tflite as weights= for predict and val
    (the same evaluator as the checkpoint: the two must agree), and the one-line errors of the command line."""
    _module("tflite")
    import numpy as np
    from helpers import FAST, make_shapes_dataset
    from PIL import Image

    import mobileseg
    from mobileseg.cli import main

    data = make_shapes_dataset(tmp_path / "shapes", n=12)
    run = mobileseg.train(data=str(data), epochs=1, project=str(tmp_path / "runs"), name="r", **FAST)
    result = mobileseg.export(weights=str(run.best), format="tflite", verbose=False)
    assert result.path == run.best.with_suffix(".tflite") and result.path.is_file()
    pt = mobileseg.val(weights=str(run.best), project=str(tmp_path / "runs"), name="pt", amp=False, **FAST)
    lite = mobileseg.val(weights=str(result.path), data=str(data), project=str(tmp_path / "runs"), name="t", **FAST)
    assert abs(pt["iou"] - lite["iou"]) < 1e-3
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(image)
    masks = mobileseg.predict(
        weights=str(result.path), source=str(image), project=str(tmp_path / "runs"), verbose=False
    )
    assert masks[0].mask.shape == (40, 56)

    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a model" * 20)
    capsys.readouterr()  # what the export and training printed is not the errors' business
    for args in (
        ["predict", f"weights={bad}", f"source={image}", f"project={tmp_path / 'runs'}"],
        ["export", f"weights={run.best}", "format=torchscript", "int8=true"],
        ["export", f"weights={run.best}", "format=onnx", "outputs=mask"],
    ):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_importing_the_tflite_converter_prints_no_library_notice():
    """litert_torch's import logs a torch deprecation line (``W... _pytree.py:630] <enum 'KernelPreference'> ...
    register_constant()``), which was the first line `mobileseg export format=tflite` printed; require() mutes it."""
    _module("tflite")
    code = "from mobileseg.deploy.phone_runtimes import require; require('litert_torch', 'format=tflite')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "register_constant" not in proc.stderr, proc.stderr
    assert "absl::InitializeLog" not in proc.stderr and "port.cc" not in proc.stderr, proc.stderr  # C++, on fd 2


def test_native_log_filter_drops_only_the_known_cpp_notices(capfd, monkeypatch):
    """TensorFlow, LiteRT and ExecuTorch write notices to fd 2 from C++ (four to six lines per export, model load or
    `mobileseg predict` with a phone file); the filter drops those lines and passes the rest on, in order."""
    import os

    from mobileseg.deploy.phone_runtimes import native_log_filter

    noise = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        b"I0000 00:00:1796671514.850656   22852 port.cc:153] oneDNN custom operations are on.\n"
        b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
        b"[cpuinfo_utils.cpp:87] Failed to open midr file /sys/devices/soc0/image_version\n"
        b"[threadpool.cpp:66] Resetting threadpool to 1 threads.\n"
    )
    with native_log_filter():
        os.write(2, noise + b"E0000 00:00:1.5   7 model.cc:12] a real error\n")
        os.write(2, b"no newline at the end")
    kept = "E0000 00:00:1.5   7 model.cc:12] a real error\nno newline at the end"
    assert capfd.readouterr().err == kept
    os.write(2, noise[:20] + b"\n")  # outside the block nothing is filtered
    assert capfd.readouterr().err == noise[:20].decode() + "\n"
    monkeypatch.setenv("MOBILESEG_DEBUG", "1")  # nor with the debugging switch on
    with native_log_filter():
        os.write(2, noise)
    assert capfd.readouterr().err == noise.decode()


def test_executorch_int8_keeps_the_float_layers_in_float():
    """int8_float_layers reaches PT2E: convs of the named blocks keep float weights, the rest are dequantized int8."""
    executorch = _module("executorch")
    from mobileseg.deploy.mobile import prepare

    graph = prepare(MODELS[3], "probs", binary=False, conf=0.5, subpixel=True)  # wrapped: module paths get "model."
    sample = CALIB[:1]

    def conv_weights_quantized(layers: tuple[str, ...]) -> dict[str, bool]:
        converted = executorch._quantize(graph, sample, CALIB[:2], layers)
        found = {}
        for node in converted.graph.nodes:
            if node.op == "call_function" and "conv2d" in str(node.target):
                module = list(node.meta["nn_module_stack"].values())[-1][0]
                found[module] = "dequantize" in str(getattr(node.args[1], "target", ""))
        return found

    default = conv_weights_quantized(("encoder.features.0", "encoder.features.1"))
    floats = sorted(m for m, q in default.items() if not q)
    assert floats and all(m.startswith(("model.encoder.features.0", "model.encoder.features.1.")) for m in floats)
    assert sum(default.values()) >= len(default) - 3 and sum(default.values()) >= 10
    assert all(conv_weights_quantized(()).values())  # empty: every layer int8
    with pytest.raises(ExportError, match="'encoder.nope' is not a module"):
        executorch._quantize(graph, sample, CALIB[:2], ("encoder.nope",))
