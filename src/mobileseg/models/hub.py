"""Hugging Face Hub-style model folders: ``config.json`` + ``model.safetensors`` + a model card ``README.md``.

Why a second format beside ``best.pt``: a checkpoint is a pickle (read safely with ``weights_only``, but still a
pickle, and it carries the optimizer, the history and the whole run config). A *pretrained folder* is what one
shares: the weights alone in `safetensors <https://huggingface.co/docs/safetensors>`_ (plain tensors, read without
pickle, so loading a stranger's file cannot run code), a small JSON describing how to rebuild the model and read
its output (constructor arguments, class names, input size, palette, ignore index), and a card the Hub renders.

Layout written by :func:`save_pretrained` (``format_version`` 1)::

    <folder>/config.json        {"format": "mobileseg", "format_version": 1, "mobileseg_version": "...",
                                 "architecture": "Segmenter", "model_args": {...}, "names": [...],
                                 "imgsz": [H, W], "palette": [[r, g, b], ...] | null, "ignore_index": 255,
                                 "binary": bool, "out_channels": int, "metrics": {...} | null}
    <folder>/model.safetensors  the state dict (contiguous copies; metadata {"format": "pt"})
    <folder>/README.md          model card with Hub YAML front matter (library_name, tags, pipeline_tag)
    <folder>/images/...         pictures linked from the card (optional)

:meth:`Segmenter.from_pretrained` accepts such a folder, or a Hub repo id (downloaded with ``huggingface_hub`` into its
cache; offline, it fails in one line naming the repo and the cache). :func:`push_to_hub` uploads a folder.
``safetensors`` is a core dependency; ``huggingface_hub`` is the ``mobileseg[hub]`` extra.

Example:
    >>> from mobileseg.models import Segmenter
    >>> model = Segmenter(num_classes=1, encoder_weights=None)
    >>> folder = model.save_pretrained("pets-binary", info={"names": ["background", "pet"]})  # doctest: +SKIP
    >>> same = Segmenter.from_pretrained(folder)  # doctest: +SKIP
    >>> same.names  # doctest: +SKIP
    ['background', 'pet']
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .weights import WeightsError

if TYPE_CHECKING:  # the model class imports this module (Segmenter.save_pretrained/from_pretrained)
    from .segmenter import Segmenter

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
IMAGES_DIR = "images"
FORMAT = "mobileseg"
FORMAT_VERSION = 1
_REQUIRED = ("format", "format_version", "model_args", "names", "imgsz", "ignore_index")
_INFO_KEYS = {"names", "imgsz", "palette", "ignore_index", "license", "dataset", "repo_id"}
# A Hub repo id: "name" or "namespace/name" (letters, digits, '-', '_', '.'); anything else is a local path.
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
HUB_INSTALL_HINT = "pip install huggingface_hub (or pip install 'mobileseg[hub]')"


# --------------------------------------------------------------------------------------------------- saving
def save_pretrained(
    model: Segmenter,
    directory: str | os.PathLike[str],
    *,
    info: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    card_extra: str | None = None,
    images: Sequence[str | os.PathLike[str]] | None = None,
) -> Path:
    """Write ``model`` as a shareable folder: ``config.json``, ``model.safetensors`` and a model card.

    The folder is self-contained: :func:`from_pretrained` rebuilds the identical model from it (bit-identical
    outputs), and ``huggingface_hub`` can upload it as it is (:func:`push_to_hub`). Existing files of the same
    names are replaced; other files in the folder are left alone.

    Args:
        model: the network to save (its ``init_args`` rebuild it; ``encoder_weights`` is stored as ``None``
            because the state dict holds every weight).
        directory: the folder to write (created if missing).
        info: what a user needs to read the output: ``names`` (class names; default ``model.names``, else
            ``['background', 'foreground']`` for a binary model or ``class0..N-1``), ``imgsz`` (``[H, W]``;
            default ``model.imgsz``), ``palette`` (``[[r, g, b], ...]`` or None), ``ignore_index`` (default 255).
            Card-only keys: ``license`` (an SPDX id for the front matter), ``dataset`` (shown in the card),
            ``repo_id`` (used in the card's usage snippet).
        metrics: evaluation results (e.g. ``{'iou': 0.81, 'dice': 0.89}``), shown as a table in the card and
            stored in ``config.json``.
        card_extra: Markdown appended to the card (training details, limitations, citation, ...).
        images: pictures (e.g. ``val_predictions.png``) copied into ``<directory>/images/`` and shown in the card.

    Returns:
        The folder's path.

    Raises:
        ValueError: ``info`` has unknown keys or values that do not fit the model (e.g. the wrong number of names).
        FileNotFoundError: an entry of ``images`` does not exist.

    Example:
        >>> from mobileseg.models import Segmenter
        >>> model = Segmenter(num_classes=3, encoder_weights=None)
        >>> save_pretrained(model, "out/model", info={"names": ["bg", "cat", "dog"]},
        ...                 metrics={"iou": 0.7})  # doctest: +SKIP
        PosixPath('out/model')
    """
    from safetensors.torch import save_file

    info = dict(info or {})
    unknown = sorted(set(info) - _INFO_KEYS)
    if unknown:
        raise ValueError(f"save_pretrained: unknown info keys {unknown}; expected some of {sorted(_INFO_KEYS)}")
    picture_paths = [Path(p) for p in images or []]
    for p in picture_paths:
        if not p.is_file():
            raise FileNotFoundError(f"save_pretrained: image not found: {p}")
    config = _build_config(model, info, metrics)
    try:
        _validate_config(config, "save_pretrained")  # what we write must be what we would accept
    except WeightsError as e:
        raise ValueError(str(e)) from None

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share memory or are not contiguous (channels_last weights are not, in
    # its sense); independent contiguous copies hold the same values and load back into the same layout.
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    _atomic(folder / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    _atomic(folder / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))

    linked: list[str] = []
    if picture_paths:
        (folder / IMAGES_DIR).mkdir(exist_ok=True)
    for p in picture_paths:
        dest = folder / IMAGES_DIR / p.name
        if p.resolve() != dest.resolve():
            shutil.copyfile(p, dest)
        linked.append(f"{IMAGES_DIR}/{p.name}")
    card = _model_card(config, info, linked, card_extra)
    _atomic(folder / CARD_NAME, lambda tmp: tmp.write_text(card))
    return folder


def _atomic(path: Path, write: Any) -> None:
    """Write through a temp file and rename, so an interrupted save never leaves a truncated file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _default_names(out_channels: int) -> list[str]:
    return ["background", "foreground"] if out_channels == 1 else [f"class{i}" for i in range(out_channels)]


def _build_config(model: Segmenter, info: Mapping[str, Any], metrics: Mapping[str, float] | None) -> dict[str, Any]:
    from mobileseg._version import __version__

    out_channels = int(model.num_classes)
    names = info.get("names", model.names) or _default_names(out_channels)
    imgsz = info.get("imgsz", model.imgsz)
    if isinstance(imgsz, int):
        imgsz = (imgsz, imgsz)
    palette = info.get("palette")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mobileseg_version": __version__,
        "architecture": "Segmenter",
        "model_args": model.checkpoint_args(),
        "names": [str(n) for n in names],
        "imgsz": [int(v) for v in imgsz],
        "palette": None if palette is None else [[int(c) for c in rgb] for rgb in palette],
        "ignore_index": int(info.get("ignore_index", 255)),
        "binary": out_channels == 1,
        "out_channels": out_channels,
        "metrics": None if metrics is None else {str(k): float(v) for k, v in metrics.items()},
    }


def _model_card(config: Mapping[str, Any], info: Mapping[str, Any], images: list[str], extra: str | None) -> str:
    """The README.md the Hub renders: YAML front matter (library, tags, pipeline) + what the model is and does."""
    front = ["---", "library_name: mobileseg"]
    if info.get("license"):
        front.append(f"license: {info['license']}")
    front += [
        "tags:",
        "- image-segmentation",
        "- semantic-segmentation",
        "- mobileseg",
        "- mobilenetv2",
        "- pix2pix",
        "pipeline_tag: image-segmentation",
        "---",
    ]
    args, names = config["model_args"], config["names"]
    h, w = config["imgsz"]
    kind = "binary: one logit, threshold 0.5" if config["binary"] else f"{config['out_channels']} logits, argmax"
    source = info.get("repo_id") or "path/to/this/folder"
    lines = [
        *front,
        "",
        f"# {info.get('repo_id') or 'mobileseg segmentation model'}",
        "",
        "A MobileNetV2 encoder + pix2pix decoder (the TensorFlow segmentation tutorial's design) trained with "
        f"[mobileseg](https://pypi.org/project/mobileseg/) {config['mobileseg_version']}.",
        "",
        f"- Classes ({len(names)}): {', '.join(names)} ({kind})",
        f"- Input: RGB {h}x{w} (any size that is a multiple of 32 works), values in [0, 1]; the model normalises "
        "itself",
        f"- Architecture: MobileNetV2 x{args['width_mult']:g}, decoder kernel {args['kernel_size']}",
        f"- Ignore index in labels: {config['ignore_index']}",
    ]
    if info.get("dataset"):
        lines.append(f"- Data: {info['dataset']}")
    if config.get("metrics"):
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in config["metrics"].items()]
    if images:
        lines += ["", "## Examples", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in images]
    lines += [
        "",
        "## Use it",
        "",
        "```python",
        "import torch",
        "from mobileseg.models.hub import from_pretrained",
        "",
        f"model = from_pretrained({source!r})  # eval mode",
        f"logits = model(torch.rand(1, 3, {h}, {w}))  # RGB in [0, 1] -> (1, {config['out_channels']}, {h}, {w})",
        "```",
        "",
        "The weights are in safetensors format: loading them runs no code.",
    ]
    if extra:
        lines += ["", extra.strip()]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- loading
def is_pretrained_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a local folder holding ``config.json`` and ``model.safetensors``.

    A cheap check for routing (e.g. ``weights=<folder>``); the files' contents are validated when loaded.

    Example:
        >>> is_pretrained_dir("runs/train/exp/weights/best.pt")
        False
    """
    p = Path(path).expanduser()
    return p.is_dir() and (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()


def load_pretrained_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``config.json`` of a local pretrained folder, without loading any weights.

    Args:
        path: the folder (or its ``config.json``).

    Returns:
        A dict with ``names`` (list[str]), ``imgsz`` ((H, W)), ``palette`` (list of [r, g, b] or None),
        ``ignore_index`` (int), ``binary`` (bool), ``out_channels`` (int), ``model_args`` (dict),
        ``metrics`` (dict or None), ``mobileseg_version`` and ``format_version``.

    Raises:
        WeightsError: the file is missing, not JSON, or not a valid mobileseg config (the message names the file
            and the problem).

    Example:
        >>> load_pretrained_info("pets-binary")["names"]  # doctest: +SKIP
        ['background', 'pet']
    """
    p = Path(path).expanduser()
    cfg_path = p if p.name == CONFIG_NAME and p.is_file() else p / CONFIG_NAME
    if not cfg_path.is_file():
        what = "no such folder" if not p.exists() else f"no {CONFIG_NAME} in it"
        raise WeightsError(
            f"{p}: {what}; a mobileseg pretrained folder holds {CONFIG_NAME} + {WEIGHTS_NAME} (see save_pretrained)"
        )
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise WeightsError(f"{cfg_path}: not a text file (corrupt?)") from None
    except json.JSONDecodeError as e:
        raise WeightsError(f"{cfg_path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    _validate_config(config, str(cfg_path))
    return {
        "names": list(config["names"]),
        "imgsz": (int(config["imgsz"][0]), int(config["imgsz"][1])),
        "palette": config.get("palette"),
        "ignore_index": int(config["ignore_index"]),
        "binary": int(config["model_args"]["num_classes"]) == 1,
        "out_channels": int(config["model_args"]["num_classes"]),
        "model_args": dict(config["model_args"]),
        "metrics": config.get("metrics"),
        "mobileseg_version": config.get("mobileseg_version"),
        "format_version": int(config["format_version"]),
    }


def _validate_config(config: Any, source: str) -> None:
    """Raise a one-line :class:`WeightsError` naming ``source`` unless ``config`` is a usable mobileseg config."""

    def bad(problem: str) -> WeightsError:
        return WeightsError(f"{source}: {problem}")

    if not isinstance(config, dict):
        raise bad(f"expected a JSON object, got a {type(config).__name__}")
    if config.get("format") != FORMAT:
        raise bad(f"not a mobileseg config (format is {config.get('format')!r}, expected {FORMAT!r})")
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise bad(f"missing keys {missing}")
    version = config["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(f"format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise bad(
            f"format_version {version} is newer than this mobileseg reads ({FORMAT_VERSION}); upgrade mobileseg "
            f"(the folder was written by mobileseg {config.get('mobileseg_version', '?')})"
        )
    args = config["model_args"]
    if not isinstance(args, dict) or "num_classes" not in args:
        raise bad("model_args must be an object with at least num_classes")
    out = args["num_classes"]
    if not isinstance(out, int) or isinstance(out, bool) or out < 1:
        raise bad(f"model_args.num_classes must be a positive integer, got {out!r}")
    names = config["names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad(f"names must be a list of strings, got {names!r}")
    if len(names) != out and not (out == 1 and len(names) == 2):
        raise bad(f"{len(names)} names for {out} output channel(s) (a binary model has 1 channel and 2 names)")
    imgsz = config["imgsz"]
    if (
        not isinstance(imgsz, list)
        or len(imgsz) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in imgsz)
    ):
        raise bad(f"imgsz must be [H, W] with positive integers, got {imgsz!r}")
    palette = config.get("palette")
    if palette is not None and (
        not isinstance(palette, list)
        or not all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in palette
        )
    ):
        raise bad("palette must be null or a list of [r, g, b] integers in 0..255")
    ignore = config["ignore_index"]
    if not isinstance(ignore, int) or isinstance(ignore, bool):
        raise bad(f"ignore_index must be an integer, got {ignore!r}")
    metrics = config.get("metrics")
    if metrics is not None and (
        not isinstance(metrics, dict) or not all(isinstance(v, int | float) for v in metrics.values())
    ):
        raise bad("metrics must be null or an object of numbers")


def resolve_pretrained(
    dir_or_repo_id: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """A local folder holding ``config.json`` + ``model.safetensors``: the folder itself, or a Hub download.

    A path that exists locally is used as it is (never a download). Otherwise, a string shaped like a Hub repo id
    (``name`` or ``namespace/name``) is fetched with ``huggingface_hub.snapshot_download`` (only those two files,
    into the Hugging Face cache, or ``cache_dir``); a cached copy is used when the network is unreachable.

    Args:
        dir_or_repo_id: a local folder (or its ``config.json``), or a Hub repo id.
        revision: branch, tag or commit of the repo (default: the main branch).
        cache_dir: the Hub cache folder (default ``$HF_HUB_CACHE``, ``~/.cache/huggingface/hub``).

    Raises:
        WeightsError: the folder lacks a file, the repo cannot be fetched (offline: the message names the repo
            id and the cache folder), or ``huggingface_hub`` is not installed.

    Example:
        >>> resolve_pretrained("my-org/pets-binary")  # doctest: +SKIP
        PosixPath('/root/.cache/huggingface/hub/models--my-org--pets-binary/snapshots/3f2c.../')
    """
    text = os.fspath(dir_or_repo_id)
    local = Path(text).expanduser()
    if local.is_file() and local.name in (CONFIG_NAME, WEIGHTS_NAME):
        local = local.parent
    if local.exists():
        if not local.is_dir():
            raise WeightsError(f"{local} is a file; expected a folder with {CONFIG_NAME} + {WEIGHTS_NAME}")
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (local / n).is_file()]
        if missing:
            raise WeightsError(f"{local}: missing {' and '.join(missing)}; not a mobileseg pretrained folder")
        return local
    if isinstance(dir_or_repo_id, Path) or not _REPO_ID.match(text):
        raise WeightsError(f"{local}: no such folder (and '{text}' is not a Hugging Face Hub repo id)")
    return _download(text, revision, cache_dir)


def _download(repo_id: str, revision: str | None, cache_dir: str | os.PathLike[str] | None) -> Path:
    try:
        import huggingface_hub
    except ImportError:
        raise WeightsError(
            f"'{repo_id}' is not a local folder, and downloading it from the Hugging Face Hub needs "
            f"huggingface_hub: {HUB_INSTALL_HINT}"
        ) from None
    cache = Path(cache_dir).expanduser() if cache_dir else Path(huggingface_hub.constants.HF_HUB_CACHE)
    at = f"@{revision}" if revision else ""
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME],
            library_name="mobileseg",
        )
    except (OSError, ValueError) as e:  # every huggingface_hub error (HTTP, offline, not found) is one of these
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise WeightsError(
            f"'{repo_id}{at}' is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(e).__name__}: {reason}); nothing usable is cached for it in {cache}. Download it where there "
            f"is a network (huggingface-cli download {repo_id}) and copy the cache, or pass a local folder."
        ) from None
    local = Path(folder)
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (local / n).is_file()]
    if missing:
        raise WeightsError(
            f"Hub repo '{repo_id}{at}' has no {' and '.join(missing)}: not a mobileseg model (downloaded to {local})"
        )
    return local


def load_pretrained(
    dir_or_repo_id: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """A pretrained folder (or Hub repo id) as a checkpoint dict that ``Segmenter.from_checkpoint`` reads.

    The weights are read with ``safetensors`` (no pickle, so no code can run). The dict holds ``model``,
    ``model_args``, ``names``, ``imgsz``, ``palette``, ``ignore_index`` and ``metrics``; use
    :meth:`mobileseg.models.Segmenter.from_pretrained` for the model itself.

    Args:
        dir_or_repo_id: a folder written by :func:`save_pretrained`, or a Hub repo id holding one.
        revision: branch, tag or commit of a Hub repo.
        cache_dir: the Hub cache folder (default: huggingface_hub's).

    Raises:
        WeightsError: anything wrong with the folder, its files or the download, in one line naming the file.

    Example:
        >>> ckpt = load_pretrained("pets-binary")  # doctest: +SKIP
        >>> ckpt["names"]  # doctest: +SKIP
        ['background', 'pet']
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_pretrained(dir_or_repo_id, revision=revision, cache_dir=cache_dir)
    info = load_pretrained_info(folder)
    weights = folder / WEIGHTS_NAME
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:160]
        raise WeightsError(f"{weights}: not a readable safetensors file ({reason}); it was not loaded") from None
    return {
        "model": state,
        "model_args": info["model_args"],
        "names": info["names"],
        "imgsz": list(info["imgsz"]),
        "palette": info.get("palette"),
        "ignore_index": info.get("ignore_index", 255),
        "metrics": info.get("metrics") or {},
        "source": str(weights),
    }


# -------------------------------------------------------------------------------------------------- sharing
def push_to_hub(
    directory: str | os.PathLike[str],
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    *,
    commit_message: str = "Upload mobileseg model",
) -> str:
    """Upload a pretrained folder to a Hugging Face Hub model repo (created if it does not exist).

    Args:
        directory: a folder written by :func:`save_pretrained` (checked before anything is sent).
        repo_id: ``namespace/name`` of the model repo.
        token: a Hub token with write access; default: the one ``huggingface-cli login`` stored or ``$HF_TOKEN``.
        private: create the repo as private (an existing repo keeps its visibility).
        commit_message: the commit's message.

    Returns:
        The URL of the uploaded commit.

    Raises:
        WeightsError: the folder is not a valid pretrained folder, ``huggingface_hub`` is missing, or the Hub
            refused (message names the repo).

    Example:
        >>> push_to_hub("pets-binary", "my-org/pets-binary")  # doctest: +SKIP
        'https://huggingface.co/my-org/pets-binary/commit/...'
    """
    folder = Path(directory).expanduser()
    if not is_pretrained_dir(folder):
        raise WeightsError(f"{folder}: not a pretrained folder ({CONFIG_NAME} + {WEIGHTS_NAME}); save_pretrained first")
    load_pretrained_info(folder)  # never publish a folder this library could not load back
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise WeightsError(f"push_to_hub needs huggingface_hub: {HUB_INSTALL_HINT}") from None
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message,
            ignore_patterns=[".*"],  # temp files of an interrupted save, editor droppings
        )
    except (OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise WeightsError(
            f"uploading {folder} to Hub repo '{repo_id}' failed ({type(e).__name__}: {reason})"
        ) from None
    return str(getattr(commit, "commit_url", commit))
