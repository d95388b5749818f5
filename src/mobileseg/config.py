"""Typed configuration: one schema, YAML files, and ``key=value`` overrides.

The schema has four sections (``model``, ``data``, ``train``, ``runtime``) plus the per-command sections
``predict``, ``export`` and ``serve``. Every field name is unique across sections, so the command line can use the short
form (``epochs=5``) as well as the dotted one (``train.epochs=5``). The resolved config is written into every
run folder (``args.yaml``) so a run can be reproduced and a checkpoint rebuilt from it alone.

This module assembles the sections and loads values into them; the sections themselves (fields, defaults,
validators) are in :mod:`mobileseg.config_schema` (training's) and :mod:`mobileseg.config_commands` (predict,
export, convert, serve), and which keys each command reads (``--help``) in :mod:`mobileseg.config_help`.

Example:
    >>> cfg = load_config(overrides=["epochs=2", "imgsz=256"])
    >>> cfg.train.epochs, cfg.data.imgsz
    (2, (256, 256))
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from mobileseg.config_commands import ConvertConfig, ExportConfig, PredictConfig, ServeConfig
from mobileseg.config_schema import STRIDE as STRIDE  # re-exported: setup and the model check input sizes with it
from mobileseg.config_schema import DataConfig, ModelConfig, RuntimeConfig, TrainConfig
from mobileseg.errors import ConfigError


class Config(BaseModel):
    """The whole resolved configuration."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    predict: PredictConfig = PredictConfig()
    export: ExportConfig = ExportConfig()
    serve: ServeConfig = ServeConfig()
    convert: ConvertConfig = ConvertConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


SECTIONS = ("model", "data", "train", "runtime", "predict", "export", "serve", "convert")
ALIASES = {"data": "data.dataset", "cfg": "cfg"}


def _key_index() -> dict[str, str]:
    """Short key -> dotted key, for every field (names are unique across sections)."""
    index: dict[str, str] = {}
    for section in SECTIONS:
        for name in Config.model_fields[section].annotation.model_fields:  # type: ignore[union-attr]
            assert name not in index, f"duplicate config key {name}"
            index[name] = f"{section}.{name}"
    index.update({k: v for k, v in ALIASES.items() if k != "cfg"})
    return index


KEYS = _key_index()


def resolve_key(key: str) -> str:
    """Map a short or dotted key to its dotted form, or raise with the closest suggestion."""
    if "." in key:
        section, _, name = key.partition(".")
        if section in SECTIONS and name in Config.model_fields[section].annotation.model_fields:  # type: ignore
            return key
    elif key in KEYS:
        return KEYS[key]
    choices = list(KEYS) + [v for v in KEYS.values()]
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else " Run 'mobileseg --help' for the keys."
    raise ConfigError(f"unknown config key '{key}'.{hint}")


def parse_value(text: str) -> Any:
    """Parse a command-line value as YAML (so 'true', '3', '1e-3', '[1,2]', 'null' mean what they say)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _nest(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in flat.items():
        section, _, name = resolve_key(dotted).partition(".")
        nested.setdefault(section, {})[name] = value
    return nested


def _flatten_yaml(doc: dict[str, Any], source: str) -> dict[str, Any]:
    """Accept both the sectioned form (as saved in args.yaml) and flat keys in a YAML file."""
    flat: dict[str, Any] = {}
    for key, value in (doc or {}).items():
        if key in SECTIONS and isinstance(value, dict) and key != "data":
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif key == "data" and isinstance(value, dict):
            flat.update({f"data.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    for key in flat:
        try:
            resolve_key(key)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    return flat


def load_config(
    cfg: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Build a validated :class:`Config` from defaults, an optional YAML file/dict, then overrides.

    Args:
        cfg: a YAML file path or a dict (sectioned or flat keys); later values win.
        overrides: ``["key=value", ...]`` strings from the command line, or a ``{key: value}`` dict.
    """
    flat: dict[str, Any] = {}
    if isinstance(cfg, str | Path):
        path = Path(cfg)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            doc = yaml.safe_load(path.read_bytes())  # bytes: UTF-8 on every OS, a YAMLError for other encodings
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
        flat.update(_flatten_yaml(doc, str(path)))
    elif isinstance(cfg, dict):
        flat.update(_flatten_yaml(cfg, "config"))
    given: dict[str, str] = {}  # dotted key -> how it was written, to refuse a key given twice
    items = overrides.items() if isinstance(overrides, dict) else [_split_item(i) for i in overrides or []]
    for key, value in items:
        dotted = resolve_key(key)
        if dotted in given:
            same = f"'{key}'" if given[dotted] == key else f"'{given[dotted]}' and '{key}' (the same key)"
            raise ConfigError(f"{same} given twice; give each key once")
        given[dotted] = key
        flat[key] = value
    nested = _nest(flat)
    try:
        return Config(**nested)
    except ValidationError as e:
        raise ConfigError(_explain(e)) from None


def _split_item(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected key=value, got '{item}'")
    return key.strip(), parse_value(value)


def resolve_config(
    cfg: Config | str | Path | dict[str, Any] | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """What every API entry point accepts: a :class:`Config`, a YAML path or dict, plus keyword overrides."""
    if not isinstance(cfg, Config):
        return load_config(cfg, overrides)
    return load_config(cfg.to_dict(), overrides) if overrides else cfg


def _explain(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"] if not isinstance(p, int))
        got = item.get("input")
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg} (got {got!r})")
    return "invalid config: " + "; ".join(lines)


def default_threads() -> int:
    """Threads for torch: the cores this process may use (oversubscribing 2 cores is several times slower)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS / Windows
        return max(1, os.cpu_count() or 1)
