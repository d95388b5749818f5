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
from typing import Any

from mobileseg.errors import MissingFileError

from .checkpoint import run_checkpoint
from .hub_config import CONFIG_NAME, WEIGHTS_NAME, SavableModel, build_config, load_pretrained_info, validate_config
from .model_card import model_card
from .weights import WeightsError

CARD_NAME = "README.md"
IMAGES_DIR = "images"
_INFO_KEYS = {"names", "imgsz", "palette", "ignore_index", "license", "dataset", "repo_id"}
# A Hub repo id: "name" or "namespace/name" (letters, digits, '-', '_', '.'); anything else is a local path.
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
HUB_INSTALL_HINT = "pip install huggingface_hub (or pip install 'mobileseg[hub]')"


# --------------------------------------------------------------------------------------------------- saving
def save_pretrained(
    model: SavableModel,
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
    config = build_config(model, info, metrics)
    try:
        validate_config(config, "save_pretrained")  # what we write must be what we would accept
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
    card = model_card(config, info, linked, card_extra)
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


def check_model_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a file or a pretrained folder; else a :class:`MissingFileError` that says what it is.

    A run folder is the usual slip (``weights=runs/train/exp``): the message names the ``best.pt`` inside it.

    Example:
        >>> check_model_path("runs/train/no-such-run")
        Traceback (most recent call last):
        ...
        mobileseg.errors.MissingFileError: model file not found: runs/train/no-such-run
    """
    p = Path(path).expanduser()
    if p.is_file() or is_pretrained_dir(p):
        return p
    if not p.is_dir():
        raise MissingFileError(f"model file not found: {p}")
    inside = run_checkpoint(p, "best.pt")
    if inside is not None:
        raise MissingFileError(f"{p} is a folder, not a model file: did you mean weights={inside}?")
    lacking = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (p / n).is_file()]
    raise MissingFileError(
        f"{p} is a folder without {' or '.join(lacking)}: pass a model file (best.pt, .onnx, .torchscript, .pte, "
        f".tflite) or a folder written by save_pretrained"
    )


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
