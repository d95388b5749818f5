"""The config schema as the command line sees it: list values as text, keys given twice, per-command help."""

from __future__ import annotations

import re

import pytest
import yaml

from mobileseg.cli import COMMANDS
from mobileseg.config import SECTIONS, Config, ConfigError, load_config
from mobileseg.config_help import COMMAND_KEYS, command_keys, key_help, unread_keys
from mobileseg.config_schema import _sequence_shape, format_value

TRAINING_KEYS = ("lr", "hflip", "epochs", "augment", "width_mult", "class_weights", "resume")


def all_fields() -> list[tuple[str, str]]:
    return [(s, n) for s in SECTIONS for n in Config.model_fields[s].annotation.model_fields]  # type: ignore


# ------------------------------------------------------------------------------------------ list values as text


def test_readme_split_ratios_form_is_accepted_on_the_command_line():
    cfg = load_config(overrides=["split_ratios=0.8,0.1,0.1", "scale=0.5,1.5", "class_weights=1,2.5,3"])
    assert cfg.data.split_ratios == (0.8, 0.1, 0.1)
    assert cfg.data.scale == (0.5, 1.5)
    assert cfg.train.class_weights == [1.0, 2.5, 3.0]
    assert load_config(overrides=["split_ratios=[0.7,0.2,0.1]"]).data.split_ratios == (0.7, 0.2, 0.1)
    assert load_config(overrides=["split_ratios=(0.6, 0.2, 0.2)"]).data.split_ratios == (0.6, 0.2, 0.2)
    assert load_config(overrides=["class_weights=2"]).train.class_weights == [2.0]
    assert load_config(overrides=["imgsz=256x320"]).data.imgsz == (256, 320)  # imgsz keeps its own forms


def test_every_sequence_field_accepts_comma_text(tmp_path):
    fields = [(s, n) for s, n in all_fields() if _sequence_shape(Config.model_fields[s].annotation, n) is not None]
    assert {n for _, n in fields} >= {"split_ratios", "scale", "class_weights", "imgsz"}
    defaults = Config()
    for section, name in fields:
        text_list = "str" in str(Config.model_fields[section].annotation.model_fields[name].annotation)
        shape = _sequence_shape(Config.model_fields[section].annotation, name)
        fallback = [float(i) for i in range(1, shape + 1)] if shape and shape > 0 else [1.0, 2.0]
        value = getattr(getattr(defaults, section), name) or (["a", "b"] if text_list else fallback)
        value = [64, 96] if name in ("crop", "window") else value  # image sizes: multiples of 32
        value = [64, 32, 16, 8] if name == "decoder_channels" else value  # 4 stage widths (or 5)
        cfg = load_config(overrides=[f"{section}.{name}={format_value(value)}"])
        assert list(getattr(getattr(cfg, section), name)) == list(value), name
    cfg_file = tmp_path / "cfg.yaml"  # a YAML file holding the text form works too
    cfg_file.write_text(yaml.safe_dump({"split_ratios": "0.5,0.25,0.25"}))
    assert load_config(cfg_file).data.split_ratios == (0.5, 0.25, 0.25)


def test_wrong_count_or_text_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"split_ratios: needs 3 comma-separated values, e.g. split_ratios=0.8"):
        load_config(overrides=["split_ratios=0.8,0.2"])
    with pytest.raises(ConfigError, match="data.scale"):
        load_config(overrides=["scale=a,b"])
    with pytest.raises(ConfigError, match="sum to 1"):
        load_config(overrides=["split_ratios=0.5,0.1,0.1"])
    for scales in ("0,1", "-1,1"):
        with pytest.raises(ConfigError, match=r"predict.tta_scales: .*must be one or more numbers > 0"):
            load_config(overrides=[f"tta_scales={scales}"])


# ---------------------------------------------------------------------------------------------- keys twice


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["epochs=3", "epochs=4"], "'epochs' given twice"),
        (["epochs=3", "train.epochs=4"], "'epochs' and 'train.epochs' (the same key) given twice"),
        (["data=a", "data.dataset=b"], "'data' and 'data.dataset'"),
        ({"batch": 2, "train.batch": 4}, "'batch' and 'train.batch'"),
    ],
)
def test_a_key_given_twice_is_an_error_naming_it(overrides, named):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_a_file_value_overridden_once_is_fine(tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"epochs": 7}))
    assert load_config(cfg_file, ["epochs=3"]).train.epochs == 3


# -------------------------------------------------------------------------------------------------- help


def test_command_table_covers_every_command_and_every_key():
    assert set(COMMAND_KEYS) == set(COMMANDS)
    used = {k for c in COMMAND_KEYS for k in command_keys(c)}
    assert used == {f"{s}.{n}" for s, n in all_fields()}  # a key no command reads would be dead config


def test_serve_help_lists_serving_keys_only():
    text = key_help("serve")
    shown = set(re.findall(r"^\s{4}(\w+)=", text, re.M))
    assert {"weights", "host", "port", "token", "conf", "tta", "device", "threads"} <= shown
    assert not shown & set(TRAINING_KEYS), shown & set(TRAINING_KEYS)
    check = set(re.findall(r"^\s{4}(\w+)=", key_help("check-data"), re.M))
    assert check == {"data", "preset", "imgsz", "channels", "mask_resize", "split_ratios", "split_seed"}


@pytest.mark.parametrize("command", list(COMMAND_KEYS))
def test_every_key_has_a_description_in_an_aligned_column(command):
    lines = [line for line in key_help(command).splitlines() if not line.startswith("  [")]
    rows = [line for line in lines if re.match(r"^ {4}\w+=", line)]
    assert len(rows) == len(command_keys(command))
    columns = set()
    for row in rows:
        match = re.match(r"^( {4}\w+=\S*\s{2,})(\S.*)$", row)
        assert match, f"{command}: no description in {row!r}"
        columns.add(len(match.group(1)))
    assert len(columns) == 1, f"{command}: descriptions start at columns {sorted(columns)}"
    column = columns.pop()
    for line in lines:  # wrapped continuation lines start in the same column
        if line not in rows:
            assert len(line) - len(line.lstrip()) == column, line


def test_keys_a_command_does_not_read_are_found():
    assert unread_keys("serve", ["port", "weights", "lr", "train.epochs", "data"]) == ["lr", "train.epochs", "data"]
    assert unread_keys("train", ["epochs", "hflip", "data", "device"]) == []
    assert unread_keys("test", ["split"]) == ["split"]  # test always evaluates the test split
    # serve and predict hand their config to load_predictor, which applies train_scale= on top of the model's
    assert unread_keys("serve", ["train_scale", "infer", "tta_scales"]) == []
