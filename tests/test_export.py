"""Export: ONNX/TorchScript parity (and that the check can fail), metadata, dynamic shapes, int8, benchmark."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import helpers
import numpy as np
import onnx
import pytest
import torch
from helpers import make_shapes_dataset
from onnx import numpy_helper
from PIL import Image

import mobileseg
from mobileseg.config import ConfigError, load_config
from mobileseg.deploy.int8 import int8_products_saturate
from mobileseg.deploy.onnx import read_onnx_metadata
from mobileseg.deploy.parity import check_parity
from mobileseg.deploy.rewrites import SubPixelConvTranspose2d
from mobileseg.deploy.runtimes import OnnxBackend, load_predictor
from mobileseg.engine.runtime import cpu_has_native_bf16
from mobileseg.errors import ExportError
from mobileseg.models import Segmenter

pytestmark = pytest.mark.usefixtures("one_thread")

IMGSZ = (64, 64)


def make_checkpoint(path: Path, dataset: Path | None, seed: int = 0) -> Path:
    """A tiny random-init binary model saved like the trainer does, naming ``dataset`` in its config."""
    config = load_config(overrides={"data": str(dataset), "imgsz": IMGSZ[0]}).to_dict() if dataset else {}
    return helpers.make_checkpoint(
        path, names=["background", "shape"], seed=seed, imgsz=IMGSZ, palette=[[0, 0, 0], [200, 60, 60]], config=config
    )


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n=20, size=80)


@pytest.fixture(scope="module")
def exported(shapes, tmp_path_factory):
    """best.pt (trained on 'shapes' as far as its config says) exported to best.onnx and best.int8.onnx."""
    folder = tmp_path_factory.mktemp("weights")
    ckpt = make_checkpoint(folder / "best.pt", shapes)
    result = mobileseg.export(weights=str(ckpt), int8=True, calib_images=8, verbose=False, threads=1)
    return ckpt, result


def test_onnx_parity_and_metadata(exported):
    ckpt, result = exported
    assert result.path == ckpt.with_suffix(".onnx") and result.path.is_file()
    assert result.parity.ok and result.parity.max_abs_diff <= 1e-4 and result.parity.mask_diff_fraction < 1e-3
    assert "test" in result.parity_images and "images of" in result.parity_images  # real images were used
    meta = read_onnx_metadata(result.path)
    assert json.loads(meta["names"]) == ["background", "shape"]
    assert json.loads(meta["imgsz"]) == list(IMGSZ)
    assert json.loads(meta["binary"]) is True and json.loads(meta["palette"])[1] == [200, 60, 60]
    assert meta["ignore_index"] == "255" and meta["mobileseg_version"] == mobileseg.__version__
    assert "normalisation inside the model" in meta["preprocessing"]
    predictor = load_predictor(result.path, threads=1)  # the metadata is enough to use the file alone
    assert predictor.names == ["background", "shape"] and predictor.imgsz == IMGSZ and predictor.binary


def test_dynamic_batch_and_size_run_in_ort(exported):
    ckpt, result = exported
    model = Segmenter.from_checkpoint(ckpt)
    backend = OnnxBackend(result.path)
    for shape in [(3, 3, 64, 64), (2, 3, 96, 128)]:
        x = torch.rand(*shape)
        out = backend(x)
        assert tuple(out.shape) == (shape[0], 1, shape[2], shape[3])
        with torch.inference_mode():
            assert (out.sigmoid() - model(x).sigmoid()).abs().max() < 1e-4


def test_pt_and_onnx_predictions_agree(exported, tmp_path):
    ckpt, result = exported
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(50, 70), (97, 131), (300, 200)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    kw = {"source": str(tmp_path), "verbose": False, "threads": 1}
    a = mobileseg.predict(weights=str(ckpt), out=str(tmp_path / "pt"), amp=False, **kw)  # fp32 parity
    b = mobileseg.predict(
        weights=str(result.path), source=str(tmp_path), out=str(tmp_path / "onnx"), verbose=False, threads=1
    )
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b, strict=True):
        assert ra.mask.shape == rb.mask.shape
        assert (ra.mask != rb.mask).mean() < 1e-3
        assert np.abs(ra.probs - rb.probs).max() < 1e-4


def test_parity_check_fails_on_a_broken_export(exported, tmp_path):
    ckpt, result = exported
    proto = onnx.load(str(result.path))
    # Perturb the output layer's weights as a faulty converter might: the graph runs, but computes something else.
    init = next(t for t in proto.graph.initializer if t.name == "decoder.head.weight")
    arr = numpy_helper.to_array(init).copy()
    arr += np.random.default_rng(0).normal(0, arr.std(), arr.shape).astype(arr.dtype)
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    model = Segmenter.from_checkpoint(ckpt)
    images = torch.rand(4, 3, *IMGSZ, generator=torch.Generator().manual_seed(0))
    bad = check_parity(model, broken, images)
    assert not bad.ok and bad.max_abs_diff > 1e-3 and "FAILED" in str(bad)
    good = check_parity(model, result.path, images)
    assert good.ok


def test_export_raises_and_removes_file_when_parity_fails(shapes, tmp_path, monkeypatch):
    import mobileseg.deploy.export as ex

    ckpt = make_checkpoint(tmp_path / "best.pt", shapes)
    real_fold = ex.fold_batchnorm

    def sabotaged(model):
        folded = real_fold(model)
        with torch.no_grad():
            folded.decoder.head.bias.add_(3.0)  # shifts every logit: the export no longer matches
        return folded

    monkeypatch.setattr(ex, "fold_batchnorm", sabotaged)
    with pytest.raises(ExportError, match="does not match"):
        mobileseg.export(weights=str(ckpt), verbose=False, threads=1)
    assert not ckpt.with_suffix(".onnx").exists()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_loads_and_matches(exported, tmp_path):
    ckpt, _ = exported
    result = mobileseg.export(weights=str(ckpt), format="torchscript", out=str(tmp_path), verbose=False, threads=1)
    assert result.path == tmp_path / "best.torchscript" and result.parity.ok
    loaded = torch.jit.load(str(result.path))
    x = torch.rand(2, 3, *IMGSZ)
    with torch.inference_mode():
        ref = Segmenter.from_checkpoint(ckpt)(x)
        assert (loaded(x) - ref).abs().max() < 1e-4
    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 90, 3), dtype=np.uint8))
    a, b = (
        load_predictor(ckpt, threads=1, amp=False).predict_image(image),
        load_predictor(result.path, threads=1).predict_image(image),
    )
    assert b.names == ["background", "shape"] and (a.mask != b.mask).mean() < 1e-3


def test_int8_export_reports_agreement_speed_and_iou(exported):
    _, result = exported
    report = result.int8
    assert report is not None and report.path.name == "best.int8.onnx" and report.path.is_file()
    assert "8 train images" in report.calib_images
    assert 0 < report.agreement <= 1 and report.fp32_images_s > 0 and report.int8_images_s > 0
    assert report.split == "test" and not math.isnan(report.iou_change)
    assert math.isclose(report.iou_change, report.iou_int8 - report.iou_fp32)
    meta = read_onnx_metadata(report.path)
    assert "int8" in meta["quantization"] and json.loads(meta["names"]) == ["background", "shape"]
    bits = "7-bit (reduce_range)" if int8_products_saturate() else "8-bit"  # the default, auto, follows the CPU
    assert f"per-channel {bits} weights" in meta["quantization"]
    graph = onnx.load(str(report.path)).graph
    ops = {node.op_type for node in graph.node}
    assert "ConvTranspose" not in ops and "Pad" not in ops  # every convolution can run as int8 in ORT
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert not [n.name for n in graph.node if n.op_type == "Shape" and n.input[0] in dequantized]
    assert load_predictor(report.path, threads=1).predict_image(np.zeros((33, 47, 3), np.uint8)).mask.shape == (33, 47)


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """A model trained until it finds the shapes (val IoU ~0.9 after 8 epochs at lr 0.003, ~15 s on one thread).

    int8 accuracy is checked on it, not on the random-init ``exported`` one, whose near-zero logits flip under any
    rounding: that model's agreement passed 0.9 on the VNNI CPUs but was 0.874 on an AVX2 one (Zen 3, 7-bit
    weights), where this trained model agrees to 0.9998 (IoU 0.881 -> 0.881).
    """
    run = mobileseg.train(
        data=str(shapes),
        epochs=8,
        lr=0.003,
        width_mult=0.35,
        project=str(tmp_path_factory.mktemp("runs")),
        **helpers.FAST,
    )
    return run.best


def test_int8_of_a_trained_model_keeps_its_iou(trained):
    """The default int8 export (auto weight bits for this CPU, stem in float) agrees with fp32 and keeps the IoU.

    On an AVX2 CPU without VNNI (int16 sums saturate) 8-bit weights cost this model 0.0036 IoU, and 0.037 on one
    trained at the default lr; auto picks 7-bit weights there, which cost 0.0001 and gained 0.001.
    """
    report = mobileseg.export(weights=str(trained), int8=True, calib_images=8, verbose=False, threads=1).int8
    assert report.iou_fp32 > 0.5  # the model really segments, so agreement is not all-background agreeing
    assert report.agreement > 0.98 and abs(report.iou_change) <= 0.01


def int8_convs(path: Path) -> dict[str, bool]:
    """Module of each Conv in an ONNX file -> whether its weights arrive through a DequantizeLinear (int8)."""
    from mobileseg.deploy.int8 import node_module

    graph = onnx.load(str(path)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {node_module(n.name): n.input[1] in dequantized for n in graph.node if n.op_type == "Conv"}


def test_int8_keeps_the_stem_and_first_block_in_float_by_default(exported):
    """The default int8_float_layers: the layers whose quantization cost CamVid 0.006-0.011 mIoU stay float."""
    from mobileseg.config_commands import ExportConfig
    from mobileseg.deploy.int8 import FLOAT_LAYERS, resolve_float_layers

    assert FLOAT_LAYERS == ("encoder.features.0", "encoder.features.1")
    assert resolve_float_layers(ExportConfig().int8_float_layers) == FLOAT_LAYERS
    assert resolve_float_layers([]) == () and resolve_float_layers(["decoder.head"]) == ("decoder.head",)
    convs = int8_convs(exported[1].int8.path)
    floats = sorted(m for m, q in convs.items() if not q)
    assert floats and all(m.startswith(("encoder.features.0", "encoder.features.1.")) for m in floats)
    assert "encoder.features.0.0" in floats and "encoder.features.1.conv.0.0" in floats
    assert sum(convs.values()) >= len(convs) - 3  # everything else is int8
    assert (
        "kept in float: encoder.features.0, encoder.features.1"
        in read_onnx_metadata(exported[1].int8.path)["quantization"]
    )


def test_int8_float_layers_empty_quantizes_everything_and_unknown_layers_are_named(exported, tmp_path):
    from mobileseg.deploy.int8 import quantize_int8
    from mobileseg.models.model_file import load_model

    model, info, _ = load_model(exported[0])
    images = torch.rand(4, 3, *IMGSZ, generator=torch.Generator().manual_seed(0))
    path = quantize_int8(model, tmp_path / "all.int8.onnx", images, info, float_layers=[])
    assert all(int8_convs(path).values())
    with pytest.raises(ExportError, match=r"'encoder.feature.1' is not in .*choose from .*encoder.features.3, "):
        quantize_int8(model, tmp_path / "x.onnx", images, info, float_layers=["encoder.feature.1"])
    with pytest.raises(ExportError, match=r"'encoder.features.2' is run in parts") as e:
        quantize_int8(model, tmp_path / "x.onnx", images, info, float_layers=["encoder.features.2"])
    assert "conv.0" not in str(e.value)  # the tapped blocks' nameless nodes are not offered
    with pytest.raises(ExportError, match=r"'encoder.conv.0' is not in"):  # a scope of those nodes, not a module
        quantize_int8(model, tmp_path / "x.onnx", images, info, float_layers=["encoder.conv.0"])


def test_node_module_follows_the_exporters_scope_names():
    from mobileseg.deploy.int8 import node_module

    assert node_module("/encoder/features.1/conv/conv.0/conv.0.0/Conv") == "encoder.features.1.conv.0.0"
    assert node_module("/encoder/features.0/features.0.0/Conv") == "encoder.features.0.0"
    assert node_module("/decoder/head/Conv") == "decoder.head" and node_module("Constant_3") == ""


def test_int8_reduce_range_auto_follows_the_cpu(monkeypatch):
    import platform

    from mobileseg.deploy import int8 as q

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    for name in ("_is_vnni_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    monkeypatch.setattr(q.Path, "read_text", lambda self, *a, **k: "flags : fpu sse avx2 fma")
    assert q.resolve_reduce_range("auto") is True  # AVX2 without VNNI: 8-bit weights could saturate int16 sums
    monkeypatch.setattr(q.Path, "read_text", lambda self, *a, **k: "flags : avx2 avx_vnni")
    assert q.resolve_reduce_range("auto") is False  # AVX-VNNI, which torch does not report
    monkeypatch.setattr(q.Path, "read_text", lambda self, *a, **k: "flags : avx2")
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: True)
    assert q.resolve_reduce_range("auto") is False
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert q.resolve_reduce_range("auto") is False
    assert q.resolve_reduce_range(True) is True and q.resolve_reduce_range(False) is False
    with pytest.raises(ValueError, match="true, false or auto"):
        q.resolve_reduce_range("sometimes")


@pytest.mark.parametrize("kernel_size", [2, 3, 4, 5])
def test_subpixel_rewrite_is_exact(kernel_size):
    from mobileseg.models.decoder import UpsampleBlock

    block = UpsampleBlock(6, 5, kernel_size).eval()
    ct = block[0]
    assert SubPixelConvTranspose2d.supports(ct)
    x = torch.randn(2, 6, 5, 7)
    with torch.inference_mode():
        assert (SubPixelConvTranspose2d(ct)(x) - ct(x)).abs().max() < 1e-5


def test_subpixel_rewrite_moves_relu_before_the_shuffle():
    from mobileseg.deploy.rewrites import fold_batchnorm, subpixel_rewrite
    from mobileseg.models.decoder import UpsampleBlock

    block = UpsampleBlock(6, 5, 3).eval()
    block[1].running_mean.uniform_(-1, 1)  # a BatchNorm that does something once folded
    block[1].running_var.uniform_(0.5, 2)
    rewritten = subpixel_rewrite(fold_batchnorm(block))
    assert isinstance(rewritten[0], SubPixelConvTranspose2d) and isinstance(rewritten[0].activation, torch.nn.ReLU)
    assert not any(isinstance(m, torch.nn.ReLU) for m in rewritten if m is not rewritten[0])
    x = torch.randn(2, 6, 5, 7)
    with torch.inference_mode():
        assert (rewritten(x) - block(x)).abs().max() < 1e-5


def test_int8_graph_runs_without_layout_transposes(exported):
    """ORT runs int8 convs in NHWC; the sub-pixel shuffle must not force NCHW round trips between them.

    Written NCHW, the optimised int8 graph held 19 Transposes that cost more than all its convolutions
    (int8 slower than fp32 at 2 threads); written channels-last it holds one per shuffle plus the input/output.
    """
    import onnxruntime as ort

    _, result = exported
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    optimized = result.int8.path.with_name("optimized.onnx")
    opts.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(result.int8.path), opts, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(optimized)).graph
    shuffles = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in Segmenter(2, encoder_weights=None).modules())
    transposes = [n for n in graph.node if n.op_type == "Transpose"]
    assert len(transposes) <= shuffles + 2, [list(a.ints) for n in transposes for a in n.attribute]


def test_int8_needs_calibration_images_and_onnx(tmp_path):
    ckpt = make_checkpoint(tmp_path / "best.pt", None)
    with pytest.raises(ConfigError, match="format=onnx"):
        mobileseg.export(weights=str(ckpt), format="torchscript", int8=True, verbose=False, threads=1)
    with pytest.raises(ExportError, match="calibration images"):
        mobileseg.export(weights=str(ckpt), int8=True, verbose=False, threads=1)  # no dataset, no source=


def test_benchmark_table_and_csv(exported, tmp_path, capsys):
    ckpt, _ = exported
    result = mobileseg.benchmark(weights=str(ckpt), project=str(tmp_path), batch=2, threads=1, warmup=1, runs=2)
    names = [r.backend for r in result.rows]
    assert names == ["PyTorch eager", "PyTorch channels_last", "PyTorch bf16", "ONNX Runtime fp32", "ONNX Runtime int8"]
    timed = [r for r in result.rows if r.backend != "PyTorch bf16" or cpu_has_native_bf16()]
    assert all(r.images_s > 0 and r.latency_ms > 0 for r in timed)
    bf16 = result.row("PyTorch bf16")
    assert bf16 is not None and (bf16 in timed or "no bf16 units" in bf16.note)
    assert result.threads == 1 and result.batch == 2 and result.cpu
    with open(result.save_dir / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and rows[0]["threads"] == "1"
    out = capsys.readouterr().out
    assert "ONNX Runtime int8" in out and "threads" in out


def test_benchmark_requantizes_an_int8_file_made_with_other_settings(exported, tmp_path):
    """The int8 file beside the weights is timed only if it was quantized as asked; else a note and a fresh one."""
    from mobileseg.deploy.int8 import SETTINGS_KEY, settings_differ

    ckpt, result = exported
    int8 = result.int8.path
    assert settings_differ(int8, "auto", "auto") == ""
    assert settings_differ(int8, "auto", []) == "int8_float_layers=encoder.features.0,encoder.features.1"
    kw = {"weights": str(ckpt), "project": str(tmp_path), "batch": 2, "threads": 1, "warmup": 1, "runs": 2}
    same = mobileseg.benchmark(**kw, verbose=False)
    assert not any("int8" in n for n in same.notes)  # the file beside the weights, as asked
    other = mobileseg.benchmark(**kw, int8_float_layers=[], verbose=False)
    assert any(f"{int8.name} beside the weights was quantized with int8_float_layers=" in n for n in other.notes)
    assert any("int8 quantized to a temporary folder" in n for n in other.notes)
    assert other.row("ONNX Runtime int8").images_s > 0
    with pytest.raises(ExportError, match="'encoder.nope' is not in"):  # no longer times the old file silently
        mobileseg.benchmark(**kw, int8_float_layers=["encoder.nope"], verbose=False)
    old = tmp_path / "old.int8.onnx"  # an export from before the settings were recorded
    proto = onnx.load(str(int8))
    keep = [m for m in proto.metadata_props if m.key != SETTINGS_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.save(proto, str(old))
    assert "not recorded" in settings_differ(old, "auto", "auto")


def test_benchmark_without_dataset_skips_int8(tmp_path):
    ckpt = make_checkpoint(tmp_path / "best.pt", None)
    result = mobileseg.benchmark(
        weights=str(ckpt), project=str(tmp_path), batch=2, threads=1, warmup=1, runs=2, verbose=False
    )
    int8 = result.row("ONNX Runtime int8")
    assert int8 is not None and math.isnan(int8.images_s) and "calibration" in int8.note
    assert result.row("ONNX Runtime fp32").images_s > 0
    assert not ckpt.with_suffix(".onnx").exists()  # exported to a temporary folder, not beside the weights
