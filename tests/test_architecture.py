"""The structure the code promises: one model-file schema, one dataset rule, one error family, no back-arrows."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import FAST, make_checkpoint, make_shapes_dataset

import mobileseg
from mobileseg.cli import main
from mobileseg.config import load_config
from mobileseg.deploy.samples import open_dataset
from mobileseg.errors import MobilesegError, WeightsError
from mobileseg.models import Segmenter
from mobileseg.models.checkpoint import FORMAT_VERSION, load_checkpoint
from mobileseg.models.model_file import load_model

SRC = Path(mobileseg.__file__).parent


def test_test_and_export_score_the_same_stems_after_the_dataset_moved(tmp_path, one_thread):
    """A seeded automatic split, recorded in the checkpoint, survives a move of the dataset: ``test`` and the
    export's parity/int8 images come from exactly the test stems the run held out (a non-default split_seed, so
    the old rule, which re-split a moved dataset with the command line's defaults, would pick other images)."""
    data = make_shapes_dataset(tmp_path / "shapes", n=20)
    run = mobileseg.train(data=str(data), epochs=1, split_seed=7, project=str(tmp_path / "runs"), name="r", **FAST)
    ckpt = load_checkpoint(run.best)
    held_out = ckpt["split_stems"]["test"]
    assert held_out

    moved = shutil.copytree(data, tmp_path / "elsewhere" / "shapes")
    for extra in ("zz_new1", "zz_new2"):  # files added since training must not enter the test split
        shutil.copy(moved / "images" / "s00.png", moved / "images" / f"{extra}.png")
        shutil.copy(moved / "masks" / "s00.png", moved / "masks" / f"{extra}.png")
    shutil.rmtree(data)  # the original location is gone

    metrics = mobileseg.test(weights=str(run.best), data=str(moved), project=str(tmp_path / "runs"), **FAST)
    tested = json.loads((Path(metrics["save_dir"]) / "metrics.json").read_text())["stems"]
    cfg = load_config(overrides={"data": str(moved)})
    spec, why_not = open_dataset(ckpt, cfg, (64, 64))
    assert spec is not None, why_not
    exported = [s.stem for s in spec.splits["test"]]
    assert tested == exported == held_out


def test_test_of_a_run_trained_without_test_images_says_so(tmp_path, one_thread):
    """A run whose recorded split held no test images (its data had train/val only), tested on a folder that has
    some: the recorded split is kept (the rule above), and the error says why nothing is scored, instead of
    "split 'test' is empty" beside a listing that names test (what the first GPU run's checkpoints got)."""
    data = make_shapes_dataset(tmp_path / "shapes", n=10)
    ckpt_path = make_checkpoint(tmp_path / "m.pt", config={"data": {"dataset": str(data)}})
    ckpt = torch.load(ckpt_path, weights_only=False)
    stems = sorted(p.stem for p in (data / "images").iterdir())
    ckpt["split_stems"] = {"train": stems[:8], "val": stems[8:], "test": []}
    torch.save(ckpt, ckpt_path)
    with pytest.raises(MobilesegError, match=r"trained with no test images in its recorded split"):
        mobileseg.test(weights=str(ckpt_path), data=str(data), project=str(tmp_path / "runs"), **FAST)


def test_checkpoint_schema_version(tmp_path):
    ckpt = Segmenter(num_classes=2).to_checkpoint(names=["a", "b"], imgsz=(64, 64))
    assert ckpt["format_version"] == FORMAT_VERSION
    old = {k: v for k, v in ckpt.items() if k != "format_version"}  # written before the version existed
    model, info, _ = load_model(old)
    assert info.names == ["a", "b"] and model.num_classes == 2
    newer = {**ckpt, "format_version": FORMAT_VERSION + 1}
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(WeightsError, match="newer mobileseg"):
        load_model(tmp_path / "newer.pt")


def test_a_library_bug_shows_its_traceback_and_a_user_error_one_line(monkeypatch, capsys):
    import mobileseg.commands

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(mobileseg.commands, "check_data", broken)
    assert main(["check-data"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and "please report" in err

    assert main(["predict", "source=x.jpg"]) == 1  # no weights: the user's to fix
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0 and "weights=" in err


def test_every_user_error_is_one_family():
    from mobileseg import config, data, models

    for cls in (config.ConfigError, data.DataError, models.WeightsError):
        assert issubclass(cls, MobilesegError)


def _imports(path: Path) -> list[tuple[str, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mobileseg") and node.level == 0:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            found += [(f".{node.module or ''}", alias.name) for alias in node.names]
    return found


def test_no_private_name_is_imported_across_modules():
    """A leading underscore means "this module's business": no other module may import it."""
    offenders = []
    for path in SRC.rglob("*.py"):
        for module, name in _imports(path):
            if name.startswith("_") and not name.startswith("__") and module != "mobileseg._version":
                offenders.append(f"{path.relative_to(SRC)}: from {module} import {name}")
    assert not offenders, "\n".join(offenders)


def test_modules_stay_small():
    """One module, one job: a module over ~350 lines is doing several."""
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
