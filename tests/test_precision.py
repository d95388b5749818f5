"""Inference precision of .pt models (issue #20): bf16 autocast where it pays, amp=false forces fp32, recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_checkpoint, make_shapes_dataset

import mobileseg
from mobileseg import benchmarking
from mobileseg.benchmarking import bf16_note
from mobileseg.config import resolve_config
from mobileseg.deploy.runtimes import TorchBackend, load_predictor, open_model
from mobileseg.engine import runtime
from mobileseg.engine.predictor import Predictor
from mobileseg.engine.runtime import cpu_has_native_bf16
from mobileseg.models import Segmenter

pytestmark = pytest.mark.usefixtures("one_thread")


def conv_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    """Records the output dtype of the model's first convolution at every forward pass."""
    seen: list[torch.dtype] = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


@pytest.fixture
def model() -> Segmenter:
    torch.manual_seed(0)
    net = Segmenter(num_classes=3, width_mult=0.35).eval()
    with torch.no_grad():
        net.decoder.head.weight.mul_(60)  # a trained model's logit range, so bf16 rounding shows in the output
    return net


def test_autocast_runs_the_forward_in_bf16_and_returns_float32_logits(model):
    seen = conv_dtypes(model)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = model(x)
    assert seen == [torch.float32]
    bf16 = TorchBackend(model, dtype=torch.bfloat16)
    out = bf16(x)
    assert seen[-1] == torch.bfloat16 and out.dtype == torch.float32 and bf16.precision == "bf16"
    p, ref = out.softmax(1), reference.softmax(1)
    assert not torch.equal(out, reference)  # bf16 did run...
    assert (p - ref).abs().max() < 0.05 and (p.argmax(1) != ref.argmax(1)).float().mean() < 0.02  # ...close to fp32


def test_compiled_backend_matches_eager():
    """TorchBackend(compile=True) really compiles (inductor, frozen weights) and computes what eager does.
    A small conv + BatchNorm net: compiling the whole Segmenter would take minutes of the suite."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU6()).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    compiled = TorchBackend(net, dtype=None, compile=True)
    assert compiled.precision == "fp32 compiled"
    assert isinstance(compiled.module, torch._dynamo.eval_frame.OptimizedModule)
    assert torch.allclose(compiled(x), TorchBackend(net, dtype=None)(x), atol=1e-5)


def test_compile_key_reaches_the_checkpoint_backend(tmp_path, monkeypatch):
    """compile=true (predict/val/test/serve) asks torch.compile for the checkpoint's module; default: it does not."""
    compiled: list[torch.nn.Module] = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(m) or m)
    ckpt = make_checkpoint(tmp_path / "best.pt")
    assert open_model(ckpt, amp=False)[0].precision == "fp32" and not compiled
    cfg = resolve_config(None, {"weights": str(ckpt), "compile": True, "amp": False})
    assert load_predictor(ckpt, threads=1, config=cfg).backend.precision == "fp32 compiled"
    assert len(compiled) == 1 and isinstance(compiled[0], Segmenter)


def test_forced_fp32_is_bit_identical_to_a_plain_model_call(model):
    seen = conv_dtypes(model)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = model(x)
    fp32 = TorchBackend(model, dtype=None)
    out = fp32(x)
    assert seen == [torch.float32, torch.float32] and fp32.precision == "fp32"
    assert torch.equal(out, reference)


@pytest.mark.parametrize("bf16_units", [True, False])
def test_open_model_follows_amp_and_the_hardware(tmp_path, monkeypatch, bf16_units):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: bf16_units)
    ckpt = make_checkpoint(tmp_path / "best.pt")
    backend, _, _ = open_model(ckpt)
    assert backend.precision == ("bf16" if bf16_units else "fp32")
    assert open_model(ckpt, amp=False)[0].precision == "fp32"
    predictor = load_predictor(ckpt, threads=1, amp=False)
    assert predictor.precision == "fp32" and "torch fp32" in predictor.describe()
    cfg_predictor = load_predictor(ckpt, threads=1, config=resolve_config(None, {"amp": False}))
    assert cfg_predictor.precision == "fp32"
    assert Predictor(Segmenter(1, width_mult=0.35), cfg_predictor.info).precision == "fp32"  # a bare module


def test_predictions_with_autocast_stay_close_to_fp32(tmp_path):
    ckpt = make_checkpoint(tmp_path / "best.pt", num_classes=3)
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    fp32 = load_predictor(ckpt, threads=1, amp=False).predict_image(image)
    auto = load_predictor(ckpt, threads=1).predict_image(image)
    assert auto.mask.shape == fp32.mask.shape == (70, 90)
    assert np.abs(auto.probs - fp32.probs).max() < 0.05 and (auto.mask != fp32.mask).mean() < 0.02


def test_val_records_the_precision(tmp_path, capsys):
    data = make_shapes_dataset(tmp_path / "shapes", n=10)
    ckpt = make_checkpoint(tmp_path / "best.pt")
    kw = {"weights": str(ckpt), "data": str(data), "project": str(tmp_path / "runs"), "workers": 0, "threads": 1}
    forced = mobileseg.val(amp=False, name="fp32", **kw)
    assert json.loads((Path(forced["save_dir"]) / "metrics.json").read_text())["precision"] == "fp32"
    assert ", fp32)" in capsys.readouterr().out
    default = mobileseg.val(name="auto", **kw)
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert json.loads((Path(default["save_dir"]) / "metrics.json").read_text())["precision"] == expected
    assert abs(default["iou"] - forced["iou"]) < 0.05


def test_benchmark_bf16_row_is_timed_only_where_val_and_predict_would_use_bf16(monkeypatch):
    assert bf16_note(False) == "amp=false (fp32 forced)"
    monkeypatch.setattr(benchmarking, "cpu_has_native_bf16", lambda: False)
    assert "no bf16 units" in bf16_note(True)
    monkeypatch.setattr(benchmarking, "cpu_has_native_bf16", lambda: True)
    assert bf16_note(True) == ""
