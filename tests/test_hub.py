"""Hub-style pretrained folders: save -> load is exact, loading runs no pickle, bad files fail in one line,
repo ids go through huggingface_hub (mocked: the machine is offline), push_to_hub calls the Hub API correctly."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobileseg.models import Segmenter, WeightsError
from mobileseg.models.hub import is_pretrained_dir, push_to_hub, resolve_pretrained, save_pretrained
from mobileseg.models.hub_config import load_pretrained_info

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(num_classes: int = 3, seed: int = 0) -> Segmenter:
    """A tiny model with non-trivial BatchNorm statistics, so a lost buffer would change the output."""
    torch.manual_seed(seed)
    model = Segmenter(num_classes, width_mult=0.35)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Segmenter]:
    """One saved 3-class folder (with a picture and metrics), shared by the read-only tests."""
    tmp = tmp_path_factory.mktemp("hub")
    picture = tmp / "val_predictions.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(picture)
    model = _model()
    folder = save_pretrained(
        model,
        tmp / "model",
        info={"names": ["bg", "cat", "dog"], "imgsz": (64, 96), "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]]},
        metrics={"iou": 0.75, "dice": 0.8},
        card_extra="## Training\n\nTrained on shapes.",
        images=[picture],
    )
    return folder, model


def test_save_writes_config_weights_card_and_pictures(saved: tuple[Path, Segmenter]) -> None:
    folder, model = saved
    assert is_pretrained_dir(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "mobileseg" and config["format_version"] == 1
    assert config["model_args"] == {**model.init_args, "encoder_weights": None}
    assert config["names"] == ["bg", "cat", "dog"] and config["imgsz"] == [64, 96]
    assert config["palette"][1] == [255, 0, 0] and config["ignore_index"] == 255
    assert config["binary"] is False and config["out_channels"] == 3
    from mobileseg import __version__

    assert config["mobileseg_version"] == __version__

    card = (folder / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: mobileseg" in front and "pipeline_tag: image-segmentation" in front
    assert "- image-segmentation" in front
    assert "| iou | 0.7500 |" in card and "| dice | 0.8000 |" in card
    assert "![val_predictions](images/val_predictions.png)" in card
    assert (folder / "images" / "val_predictions.png").is_file()
    assert card.rstrip().endswith("Trained on shapes.")


def test_save_load_gives_bit_identical_outputs(saved: tuple[Path, Segmenter]) -> None:
    folder, model = saved
    loaded = Segmenter.from_pretrained(folder)
    assert not loaded.training and loaded.names == ["bg", "cat", "dog"] and loaded.imgsz == (64, 96)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_loading_never_unpickles(saved: tuple[Path, Segmenter], monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("pickle was used to load a safetensors folder")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    folder, model = saved
    loaded = Segmenter.from_pretrained(folder)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # and the file itself is the safetensors format: 8-byte header length, then a JSON header
    raw = (folder / "model.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert header["__metadata__"] == {"format": "pt"} and "decoder.head.weight" in header


def test_load_pretrained_info(saved: tuple[Path, Segmenter]) -> None:
    folder, _ = saved
    info = load_pretrained_info(folder)
    assert info["names"] == ["bg", "cat", "dog"] and info["imgsz"] == (64, 96)
    assert info["palette"] == [[0, 0, 0], [255, 0, 0], [0, 255, 0]] and info["ignore_index"] == 255
    assert info["binary"] is False and info["out_channels"] == 3 and info["metrics"] == {"iou": 0.75, "dice": 0.8}
    assert load_pretrained_info(folder / "config.json") == info


def test_binary_defaults_and_shared_tensors(tmp_path: Path) -> None:
    """Defaults come from the model; tensors sharing memory (safetensors refuses those as they are) still save."""
    model = _model(num_classes=1)
    model.names = ["background", "pet"]
    model.imgsz = (64, 64)
    model.mean = model.std  # two state-dict entries backed by the same storage
    folder = save_pretrained(model, tmp_path / "bin")
    info = load_pretrained_info(folder)
    assert info["binary"] and info["out_channels"] == 1 and info["names"] == ["background", "pet"]
    assert info["imgsz"] == (64, 64) and info["palette"] is None
    loaded = Segmenter.from_pretrained(folder)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_save_rejects_bad_info(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown info keys"):
        save_pretrained(_model(), tmp_path / "a", info={"nmes": ["a"]})
    with pytest.raises(ValueError, match="2 names for 3 output"):
        save_pretrained(_model(), tmp_path / "b", info={"names": ["a", "b"]})
    assert not (tmp_path / "b" / "model.safetensors").exists()  # nothing written for a refused save


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.write_text("{not json"), "not valid JSON"),
        (lambda p: p.write_text("[1, 2]"), "expected a JSON object"),
        (lambda p: p.unlink(), "missing config.json"),
        (lambda p: _patch(p, format="other"), "not a mobileseg config"),
        (lambda p: _patch(p, format_version=99), "newer than this mobileseg reads"),
        (lambda p: _patch(p, names=None), "names must be a list of strings"),
        (lambda p: _patch(p, imgsz=[64]), r"imgsz must be \[H, W\]"),
        (lambda p: _patch(p, palette=[[300, 0, 0]]), "palette must be null"),
        (lambda p: _patch(p, model_args={"num_classes": 3, "depth": 5}), r"unknown entries \['depth'\]"),
        (lambda p: _drop(p, "ignore_index"), r"missing keys \['ignore_index'\]"),
    ],
)
def test_bad_config_is_one_line_weights_error(saved: tuple[Path, Segmenter], tmp_path: Path, edit, message) -> None:
    folder = _copy(saved[0], tmp_path)
    edit(folder / "config.json")
    with pytest.raises(WeightsError, match=message) as err:
        Segmenter.from_pretrained(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_bad_weights_file(saved: tuple[Path, Segmenter], tmp_path: Path) -> None:
    folder = _copy(saved[0], tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(WeightsError, match="not a readable safetensors file") as err:
        Segmenter.from_pretrained(folder)
    assert "\n" not in str(err.value)
    # weights of another architecture: the mismatch is reported, not a torch traceback
    other = _copy(saved[0], tmp_path / "other")
    _patch(
        other / "config.json",
        model_args={**json.loads((other / "config.json").read_text())["model_args"], "width_mult": 1.0},
    )
    with pytest.raises(WeightsError, match="weights do not match model_args"):
        Segmenter.from_pretrained(other)
    (other / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="missing model.safetensors"):
        Segmenter.from_pretrained(other)
    assert not is_pretrained_dir(other)


def test_missing_local_path_is_not_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fail_if_called)
    with pytest.raises(WeightsError, match="no such folder"):
        Segmenter.from_pretrained(tmp_path / "nowhere")  # a Path is always local
    with pytest.raises(WeightsError, match="no such folder"):
        Segmenter.from_pretrained(str(tmp_path / "a" / "b" / "c"))  # not shaped like a repo id


def test_repo_id_downloads_through_huggingface_hub(
    saved: tuple[Path, Segmenter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[tuple[str, dict]] = []

    def fake_download(repo_id: str, **kwargs: object) -> str:
        calls.append((repo_id, kwargs))
        return str(saved[0])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.chdir(tmp_path)  # so "my-org/pets" is not a local folder
    model = Segmenter.from_pretrained("my-org/pets", revision="v1", cache_dir=tmp_path / "cache")
    assert model.names == ["bg", "cat", "dog"]
    (repo_id, kwargs) = calls[0]
    assert repo_id == "my-org/pets" and kwargs["revision"] == "v1" and kwargs["cache_dir"] == tmp_path / "cache"
    assert set(kwargs["allow_patterns"]) == {"config.json", "model.safetensors"}


def test_repo_id_offline_names_the_cache_and_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(repo_id: str, **_kwargs: object) -> str:
        raise LocalEntryNotFoundError(
            "An error happened while trying to locate the files on the Hub and we cannot find the\nappropriate "
            "snapshot folder for the specified revision on the local disk."
        )

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "hf-cache"
    with pytest.raises(WeightsError) as err:
        Segmenter.from_pretrained("my-org/pets", cache_dir=cache)
    msg = str(err.value)
    assert "\n" not in msg and "'my-org/pets'" in msg and str(cache) in msg and "LocalEntryNotFoundError" in msg

    monkeypatch.setattr(huggingface_hub, "snapshot_download", _raise_oserror)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
    with pytest.raises(WeightsError, match="default-cache") as err:
        Segmenter.from_pretrained("pets")
    assert "\n" not in str(err.value)


def test_repo_id_without_huggingface_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import raises ImportError
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match="pip install huggingface_hub") as err:
        Segmenter.from_pretrained("my-org/pets")
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match="pip install huggingface_hub"):
        resolve_pretrained("pets")


def test_push_to_hub_creates_repo_and_uploads(saved: tuple[Path, Segmenter], monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls: list[tuple[str, tuple, dict]] = []

    class FakeApi:
        def __init__(self, token: str | None = None) -> None:
            calls.append(("init", (), {"token": token}))

        def create_repo(self, *args: object, **kwargs: object) -> None:
            calls.append(("create_repo", args, kwargs))

        def upload_folder(self, *args: object, **kwargs: object) -> object:
            calls.append(("upload_folder", args, kwargs))
            return type("Commit", (), {"commit_url": "https://hub.example/my-org/pets/commit/abc"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = push_to_hub(saved[0], "my-org/pets", token="hf_x", private=True)
    assert url == "https://hub.example/my-org/pets/commit/abc"
    assert calls[0] == ("init", (), {"token": "hf_x"})
    name, args, kwargs = calls[1]
    assert name == "create_repo" and args == ("my-org/pets",)
    assert kwargs["private"] is True and kwargs["exist_ok"] is True and kwargs["repo_type"] == "model"
    name, args, kwargs = calls[2]
    assert name == "upload_folder" and kwargs["repo_id"] == "my-org/pets"
    assert Path(kwargs["folder_path"]) == saved[0] and kwargs["repo_type"] == "model"


def test_push_to_hub_refuses_a_folder_it_could_not_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _fail_if_called)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError, match="not a mobileseg config"):
        push_to_hub(tmp_path, "my-org/pets")
    with pytest.raises(WeightsError, match="not a pretrained folder"):
        push_to_hub(tmp_path / "missing", "my-org/pets")


# ------------------------------------------------------------------------------------------------- helpers
def _copy(folder: Path, dest: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, dest / "copy"))


def _patch(config: Path, **changes: object) -> None:
    doc = json.loads(config.read_text())
    doc.update(changes)
    config.write_text(json.dumps(doc))


def _drop(config: Path, key: str) -> None:
    doc = json.loads(config.read_text())
    del doc[key]
    config.write_text(json.dumps(doc))


def _fail_if_called(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("must not be called")


def _raise_oserror(*_args: object, **_kwargs: object) -> None:
    raise OSError("[Errno 101] Network is unreachable")
