"""``COMMAND_KEYS`` against what the commands really read, so ``--help`` and the "not read" warning are true.

The config is read through local aliases (``d = cfg.data; d.imgsz``) in many modules, which grep cannot follow.
Here every field read on the Config the command line built (or on a copy of one of its sections) is recorded
while the commands run for real on a tiny dataset; a read of a key the table does not list for that command
would make ``mobileseg <command> --help`` hide it and the CLI warn that it has no effect.
"""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

import mobileseg.config as config_module
from mobileseg.cli import main
from mobileseg.config import SECTIONS, Config
from mobileseg.config_help import command_keys

# Read for every command by runtime.prepare (seed_everything), with no effect on val/predict/export results.
ALWAYS_READ = {"runtime.seed"}
# export and benchmark copy data.cache into the model's dataset config (models.model_file.trained_data); their
# sample images are then read with cache="none".
IGNORED_READS = {"export": {"data.cache"}, "benchmark": {"data.cache"}}


class Reads(set):
    """The dotted keys read on the first Config that ``load_config`` returns after :meth:`reset` (the CLI's),
    and on copies of its sections."""

    def __init__(self) -> None:
        super().__init__()
        self.owner: dict[int, str] = {}  # id of a section object -> its section name
        self.alive: list[object] = []  # keeps recorded objects alive so their ids are not reused

    def reset(self) -> None:
        self.clear()
        self.owner.clear()
        self.alive.clear()


@pytest.fixture
def recorded(monkeypatch) -> Reads:
    reads = Reads()
    owner, alive = reads.owner, reads.alive

    for section in SECTIONS:
        cls = Config.model_fields[section].annotation
        fields = set(cls.model_fields)

        def getattribute(self, name, _get=cls.__getattribute__, _fields=fields):
            if name in _fields and id(self) in owner:
                reads.add(f"{owner[id(self)]}.{name}")
            return _get(self, name)

        monkeypatch.setattr(cls, "__getattribute__", getattribute)

    copy = pydantic.BaseModel.model_copy

    def model_copy(self, *args, **kwargs):
        out = copy(self, *args, **kwargs)
        if id(self) in owner:
            owner[id(out)] = owner[id(self)]
            alive.append(out)
        return out

    monkeypatch.setattr(pydantic.BaseModel, "model_copy", model_copy)
    load = config_module.load_config

    def load_config(*args, **kwargs):
        cfg = load(*args, **kwargs)
        if not alive:  # the command line's config; later loads are the checkpoint's recorded settings
            alive.append(cfg)
            for section in SECTIONS:
                obj = object.__getattribute__(cfg, section)
                owner[id(obj)] = section
                alive.append(obj)
        return cfg

    monkeypatch.setattr(config_module, "load_config", load_config)
    return reads


def _run(recorded: Reads, command: str, *args: str) -> set[str]:
    recorded.reset()
    assert main([command, *args, "threads=1", "verbose=false"]) == 0
    return recorded - set(command_keys(command)) - ALWAYS_READ - IGNORED_READS.get(command, set())


@pytest.fixture
def trained(binary_folder: Path, tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    args = ["train", f"data={binary_folder}", "epochs=1", "imgsz=64", "batch=8", "encoder_weights=none"]
    assert main([*args, "threads=1", "workers=0", "verbose=false"]) == 0
    return next(tmp_path.glob("runs/train/*/weights/best.pt"))


def test_each_command_reads_only_the_keys_its_help_lists(trained, binary_folder, recorded, tmp_path):
    weights = f"weights={trained}"
    data = f"data={binary_folder}"
    assert not _run(recorded, "check-data", data, "mask_resize=nearest")
    assert {"data.mask_resize", "data.channels"} <= recorded  # check-data honours both (its --help shows them)
    assert not _run(recorded, "val", weights, "tta=flip")
    assert not _run(recorded, "test", weights, data, "infer=slide", "train_scale=1")
    source = next(binary_folder.glob("images/*.png"))
    assert not _run(recorded, "predict", weights, f"source={source}", f"out={tmp_path / 'pred'}", "train_scale=1")
    assert "data.train_scale" in recorded
    assert not _run(recorded, "export", weights, "int8=true", f"out={tmp_path / 'model.onnx'}")
    assert not _run(recorded, "benchmark", weights, "batch=2")
