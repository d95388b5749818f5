"""The command line: one shape for every command, readable one-line errors, the bundled sample by default."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mobileseg.cli import main, parse_args
from mobileseg.config import ConfigError, load_config
from mobileseg.errors import DataError, MissingFileError, run_script

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mobileseg", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_lists_commands_and_keys(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "val", "test", "predict", "export", "benchmark", "check-data"):
        assert command in out
    assert main(["train", "--help"]) == 0
    keys = capsys.readouterr().out
    assert "epochs=30" in keys and "imgsz=" in keys and "encoder_weights=" in keys
    assert main(["serve", "--help"]) == 0  # each command lists the keys it reads, not all of them
    keys = capsys.readouterr().out
    assert "port=8000" in keys and "weights=" in keys
    shown = set(re.findall(r"^ {4}(\w+)=", keys, re.M))
    assert "host" in shown and not shown & {"lr", "hflip", "epochs"}, keys


def test_flags_and_positionals_read_as_keys():
    assert parse_args("check-data", ["--preset", "camvid", "path/to/camvid"]) == [
        "preset=camvid",
        "data=path/to/camvid",
    ]
    assert parse_args("test", ["best.pt", "--verbose"]) == ["weights=best.pt", "verbose=true"]
    assert parse_args("predict", ["img.jpg", "--tta=true"]) == ["source=img.jpg", "tta=true"]


def test_config_file_then_overrides(tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(
        yaml.safe_dump({"epochs": 7, "train": {"lr": 0.01}, "data": "some/folder", "imgsz": [256, 320]})
    )
    cfg = load_config(cfg_file, ["epochs=3"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.data.dataset, cfg.data.imgsz) == (3, 0.01, "some/folder", (256, 320))
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        load_config(overrides=["epoch=3"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config(overrides=["imgsz=300"])
    with pytest.raises(ConfigError, match="-1x-1 must be positive"):  # no "try 32x32" for a negative size
        load_config(overrides=["imgsz=-1"])
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(overrides=["lr=-1"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "epoch=3"], "Did you mean 'epochs'"),
        (["train", "imgsz=100"], "multiple of 32"),
        (["test", "weights=missing.pt"], "missing.pt"),
        (["test", "weights=missing.pt", "split=val"], "for the val split run 'mobileseg val split=val'"),
        (["check-data", "data=no/such/folder"], "no/such/folder"),
        (["frobnicate"], "unknown command"),
        (
            ["check-data", "split_seed=1", "data.split_seed=2"],
            "'split_seed' and 'data.split_seed' (the same key) given",
        ),
    ],
)
def test_errors_are_one_readable_line(args, message, tmp_path):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_scripts_report_a_user_error_in_one_line_and_a_bug_with_its_traceback(tmp_path, capsys, monkeypatch):
    """``run_script`` gives benchmark scripts the command line's error shape (they once showed a traceback)."""

    def bad_data() -> None:
        raise DataError("masks/a.png: 3 values outside mask_values")

    assert run_script(bad_data) == 1
    assert "error: masks/a.png: 3 values outside mask_values" in capsys.readouterr().err
    assert run_script(lambda: None) == 0 and run_script(lambda: 3) == 3
    with pytest.raises(ZeroDivisionError):  # not a user error: the traceback stays
        run_script(lambda: 1 // 0)
    monkeypatch.setenv("MOBILESEG_DEBUG", "1")
    with pytest.raises(DataError):
        run_script(bad_data)
    monkeypatch.delenv("MOBILESEG_DEBUG")
    script = REPO / "benchmarks" / "edge_comb.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "missing.pt"), "x.png"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"edge_comb.py: error: model file not found: {tmp_path / 'missing.pt'}"


def test_a_key_the_command_does_not_read_is_named_in_a_warning(tmp_path, capsys, monkeypatch):
    """``predict imgsz=512`` is valid config that predict never reads: said once, before the command runs."""
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "imgsz=512", "--lr", "0.1", "conf=0.4", "weights=missing.pt", "source=x.png"]) == 1
    err = capsys.readouterr().err
    assert "warning: imgsz, lr are not read by 'predict' and have no effect" in err
    assert "missing.pt" in err  # the command still ran: the missing model is its own error
    assert main(["test", "split=test", "batch=4", "weights=missing.pt"]) == 1
    assert main(["check-data", "data=no/such", "mask_resize=nearest", "channels=1"]) == 1
    assert "warning" not in capsys.readouterr().err  # keys these commands read (test's split=test included)


def test_the_python_test_api_refuses_a_split_it_would_ignore(tmp_path):
    """``mobileseg.test(split="val")`` once evaluated the test split and said nothing; now it names ``val``."""
    import mobileseg

    with pytest.raises(ConfigError, match="run 'mobileseg val split=val'"):
        mobileseg.test(weights=str(tmp_path / "missing.pt"), split="val")
    with pytest.raises(ConfigError, match=r"split must be 'train', 'val' or 'test' \(got 'tset'\)"):
        mobileseg.test(weights=str(tmp_path / "missing.pt"), split="tset")
    with pytest.raises(MissingFileError, match="missing.pt"):  # split=test is what test does: accepted
        mobileseg.test(weights=str(tmp_path / "missing.pt"), split="test")


def test_evaluating_the_train_split_writes_beside_val_reports_not_among_training_runs(tmp_path, one_thread):
    """``val split=train`` once wrote its report to ``runs/train/exp``, a folder that looks like a training run
    (without weights) and sits among them; it goes to ``runs/val/`` now, with the split in metrics.json."""
    import json

    from helpers import make_checkpoint, make_shapes_dataset

    import mobileseg

    data = make_shapes_dataset(tmp_path / "shapes", n=10)
    kw = {"weights": str(make_checkpoint(tmp_path / "best.pt")), "data": str(data), "workers": 0, "threads": 1}
    project = tmp_path / "runs"
    out = mobileseg.val(split="train", project=str(project), verbose=False, **kw)
    assert Path(out["save_dir"]) == project / "val" / "exp" and not (project / "train").exists()
    assert json.loads((project / "val" / "exp" / "metrics.json").read_text())["split"] == "train"
    assert Path(mobileseg.test(project=str(project), verbose=False, **kw)["save_dir"]) == project / "test" / "exp"
    with pytest.raises(ConfigError, match="'train', 'val' or 'test' \\(got 'tset'\\)"):
        mobileseg.val(split="tset", project=str(project), **kw)
    with pytest.raises(ConfigError, match="runtime.split: Input should be 'train', 'val' or 'test'"):
        load_config(overrides=["split=tset"])


@pytest.mark.parametrize("command", ["predict", "test", "export", "benchmark", "serve"])
def test_a_run_folder_given_as_weights_points_to_its_best_pt(command, tmp_path, capsys):
    """``weights=runs/train/exp`` (the folder, not the file) is the usual slip: every command that reads a model
    says which file was meant, instead of "not found" for a folder that exists or "not a file"."""
    from helpers import make_checkpoint

    run = tmp_path / "exp"
    (run / "weights").mkdir(parents=True)
    best = make_checkpoint(run / "weights" / "best.pt")
    assert main([command, f"weights={run}", f"source={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert f"{run} is a folder, not a model file: did you mean weights={best}?" in err, err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([command, f"weights={empty}", f"source={tmp_path}"]) == 1
    assert "is a folder without config.json or model.safetensors" in capsys.readouterr().err


def test_check_data_exit_code_and_file_named(tmp_path):
    from helpers import make_shapes_dataset

    root = make_shapes_dataset(tmp_path / "d", n=6)
    ok = run_cli("check-data", str(root))
    assert ok.returncode == 0 and "6 pairs" in ok.stdout
    (root / "masks" / "s03.png").write_bytes(b"not a png")
    bad = run_cli("check-data", str(root))
    assert bad.returncode == 1 and "s03.png" in bad.stdout


def test_train_defaults_to_bundled_sample_then_test(tmp_path):
    proc = run_cli("train", "epochs=1", "imgsz=64", "encoder_weights=none", "batch=8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bundled pets sample" in proc.stdout and "Results saved to" in proc.stdout
    best = tmp_path / "runs" / "train" / "exp" / "weights" / "best.pt"
    assert best.is_file()
    proc = run_cli("test", f"weights={best}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "runs" / "test" / "exp" / "metrics.json").is_file()
