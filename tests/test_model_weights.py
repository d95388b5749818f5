"""Weight files: loading torchvision state dicts, offline 'imagenet', refusing unsafe pickles, checkpoints."""

from __future__ import annotations

import os
import pickle
import socket
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2

from mobileseg.models import MobileNetV2Encoder, Segmenter, WeightsError, load_encoder_weights, safe_torch_load
from mobileseg.models.weights import ENV_VAR, imagenet_cache_path


def _tv_weights(path: Path, width_mult: float = 1.0, seed: int = 3) -> nn.Module:
    """A randomly initialised torchvision mobilenet_v2 (with non-trivial BN stats), saved as a state dict."""
    torch.manual_seed(seed)
    tv = mobilenet_v2(width_mult=width_mult)
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    torch.save(tv.state_dict(), path)
    return tv.eval()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No network, an empty torch hub dir, no env override. Returns the hub dir."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))  # what torch.hub.set_dir sets; restored afterwards
    return hub


def test_loading_state_dict_changes_outputs_and_equals_torchvision(tmp_path: Path) -> None:
    path = tmp_path / "tv.pt"
    tv = _tv_weights(path)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 96)
    fresh = Segmenter(encoder_weights=None).eval()
    loaded = Segmenter(encoder_weights=str(path)).eval()
    captured: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, o: captured.append(o)) for m in (tv.features[2].conv[0], tv.features[17])
    ]
    with torch.no_grad():
        before, after = fresh.encode(x), loaded.encode(x)
        tv((x - loaded.mean) / loaded.std)
    for h in hooks:
        h.remove()
    assert not torch.allclose(before[-1], after[-1])
    # The Segmenter runs NHWC (channels_last) kernels, torchvision NCHW ones: equal up to float rounding.
    assert torch.allclose(after[0], captured[0], atol=1e-5) and torch.allclose(after[-1], captured[1], atol=1e-5)
    tv_features = {k: v for k, v in tv.state_dict().items() if k.startswith("features.") and "features.18" not in k}
    for k, v in loaded.encoder.state_dict().items():
        assert torch.equal(v, tv_features[k]), k


def test_load_encoder_weights_function(tmp_path: Path) -> None:
    path = tmp_path / "tv.pt"
    _tv_weights(path, width_mult=0.5)
    enc = MobileNetV2Encoder(width_mult=0.5)
    assert load_encoder_weights(enc, path) == path


@pytest.mark.parametrize("weights", ["none", "None", "", " none "])
def test_every_spelling_of_no_weights_builds_from_scratch(weights: str) -> None:
    # "" (an empty override, encoder_weights=) means from scratch everywhere else (is_pretrained); the encoder
    # used to try to open a file named "" instead.
    torch.manual_seed(0)
    enc = MobileNetV2Encoder(width_mult=0.35, weights=weights)
    torch.manual_seed(0)
    ref = MobileNetV2Encoder(width_mult=0.35)
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), ref.state_dict().values(), strict=True))


def test_wrong_width_names_key_and_shapes(tmp_path: Path) -> None:
    path = tmp_path / "tv_w05.pt"
    _tv_weights(path, width_mult=0.5)
    with pytest.raises(WeightsError) as err:
        MobileNetV2Encoder(width_mult=1.0, weights=path)
    msg = str(err.value)
    assert "'features.0.0.weight'" in msg and "(16, 3, 3, 3)" in msg and "(32, 3, 3, 3)" in msg
    assert str(path) in msg and "width_mult" in msg


def test_missing_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "partial.pt"
    sd = mobilenet_v2().state_dict()
    del sd["features.7.conv.0.1.running_var"]
    del sd["features.3.conv.1.1.num_batches_tracked"]  # allowed to be absent (old torchvision files)
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"'features\.7\.conv\.0\.1\.running_var' is missing"):
        MobileNetV2Encoder(weights=path)


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match="state dict"):
        MobileNetV2Encoder(weights=path)


def test_offline_imagenet_fails_fast_with_clear_message(offline: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        Segmenter(encoder_weights="imagenet")
    assert time.perf_counter() - t0 < 30
    msg = str(err.value)
    cache = offline / "checkpoints" / "mobilenet_v2-b0353104.pth"
    assert imagenet_cache_path() == cache
    assert str(cache) in msg and "encoder_weights=<path" in msg and ENV_VAR in msg
    assert "Traceback" not in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert not cache.exists()


def test_imagenet_uses_env_override(offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bundled.pt"
    tv = _tv_weights(path)
    monkeypatch.setenv(ENV_VAR, str(path))
    enc = MobileNetV2Encoder(weights="imagenet")
    assert torch.equal(enc.features[0][0].weight, tv.features[0][0].weight)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere.pt"))
    with pytest.raises(WeightsError, match=rf"\${ENV_VAR} is set to .*nowhere\.pt"):
        MobileNetV2Encoder(weights="imagenet")


def test_imagenet_uses_hub_cache_offline(offline: Path) -> None:
    cache = offline / "checkpoints" / "mobilenet_v2-b0353104.pth"
    cache.parent.mkdir(parents=True)
    tv = _tv_weights(cache)
    enc = MobileNetV2Encoder(weights="imagenet")
    assert torch.equal(enc.features[17].conv[2].weight, tv.features[17].conv[2].weight)


class _RunsCode:
    """Unpickling this calls os.system: exactly what a weights loader must never do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["torch_save", "raw_pickle"])
def test_pickle_that_runs_code_is_refused(tmp_path: Path, fmt: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"features.0.0.weight": _RunsCode(marker)}
    if fmt == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    refused = r"not a plain weights file: .*(posix|nt)\.system.*not loaded, for safety"
    for load in (safe_torch_load, lambda p: MobileNetV2Encoder(weights=p), Segmenter.from_checkpoint):
        with pytest.raises(WeightsError, match=refused) as err:
            load(path)
        assert str(path) in str(err.value)
    assert not marker.exists()


def test_missing_and_non_torch_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"not found: .*nope\.pt"):
        safe_torch_load(tmp_path / "nope.pt")
    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n")
    with pytest.raises(WeightsError, match=r"notes\.txt is not a PyTorch weights file"):
        safe_torch_load(text)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04" + bytes(range(256)))
    with pytest.raises(WeightsError, match=r"junk\.pt is not a PyTorch weights file"):
        safe_torch_load(junk)
    # Four bytes of text: torch's legacy (non-zip) reader fails inside struct.unpack, which was a traceback.
    short = tmp_path / "short.pt"
    short.write_text("junk")
    with pytest.raises(WeightsError, match=r"short\.pt is not a PyTorch weights file"):
        safe_torch_load(short)


def test_from_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Segmenter(num_classes=3, width_mult=0.5, kernel_size=4, decoder_dropout=0.2, freeze_bn=True)
    model.train()
    for m in model.modules():  # move every BN away from its init so the stats must round-trip
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
    model(torch.rand(2, 3, 64, 64))
    model.eval()
    path = tmp_path / "best.pt"
    torch.save(model.to_checkpoint(names=["bg", "cat", "dog"], imgsz=(256, 320), epoch=7), path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["model_args"]["encoder_weights"] is None and ckpt["imgsz"] == [256, 320]

    rebuilt = Segmenter.from_checkpoint(path)
    assert not rebuilt.training and rebuilt.freeze_bn
    assert rebuilt.names == ["bg", "cat", "dog"] and rebuilt.imgsz == (256, 320)
    assert rebuilt.init_args == {**model.init_args, "encoder_weights": None}
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_from_checkpoint_defaults_and_ignores_stored_encoder_weights(tmp_path: Path, offline: Path) -> None:
    model = Segmenter(width_mult=0.35)
    path = tmp_path / "ckpt.pt"
    # Even if a writer forgot to clear it, rebuilding must not try to fetch 'imagenet' (we are offline here).
    torch.save({"model": model.state_dict(), "model_args": {**model.init_args, "encoder_weights": "imagenet"}}, path)
    rebuilt = Segmenter.from_checkpoint(path)
    assert rebuilt.names is None and rebuilt.imgsz == (224, 224)


def test_from_checkpoint_requires_dict_form(tmp_path: Path) -> None:
    model = Segmenter(width_mult=0.35)
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    with pytest.raises(WeightsError, match=r"bare state dict.*'model'.*'model_args'"):
        Segmenter.from_checkpoint(bare)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": model.state_dict()}, other)
    with pytest.raises(WeightsError, match=r"keys \['state_dict'\]"):
        Segmenter.from_checkpoint(other)
    bad_args = tmp_path / "bad_args.pt"
    torch.save({"model": model.state_dict(), "model_args": {**model.init_args, "depth": 3}}, bad_args)
    with pytest.raises(WeightsError, match=r"unknown entries \['depth'\]"):
        Segmenter.from_checkpoint(bad_args)
    mismatch = tmp_path / "mismatch.pt"
    torch.save({"model": model.state_dict(), "model_args": {**model.init_args, "num_classes": 2}}, mismatch)
    with pytest.raises(WeightsError, match="do not match model_args"):
        Segmenter.from_checkpoint(mismatch)


def test_checkpoint_is_not_encoder_weights(tmp_path: Path) -> None:
    model = Segmenter(width_mult=0.35)
    path = tmp_path / "ckpt.pt"
    torch.save(model.to_checkpoint(), path)
    with pytest.raises(WeightsError, match="from_checkpoint"):
        MobileNetV2Encoder(width_mult=0.35, weights=path)
