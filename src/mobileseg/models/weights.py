"""Loading weight files safely and offline-first.

Two concerns live here, both about files that come from somewhere else:

* ``safe_torch_load`` never runs code from a file. ``torch.load(weights_only=True)`` already refuses pickles
  that name arbitrary Python callables; we turn its long, version-specific message into one that says what
  happened (the file was *not* loaded) and which file it was.
* ``load_encoder_weights`` resolves ``'imagenet'`` without surprises on machines with no network: an explicit
  override (``$MOBILESEG_ENCODER_WEIGHTS``), then torch hub's cache, then one short download attempt that fails
  in seconds with a message naming the cache path and the offline alternatives, never a urllib traceback.

Example:
    >>> from mobileseg.models import MobileNetV2Encoder, load_encoder_weights
    >>> enc = MobileNetV2Encoder(weights=None)
    >>> load_encoder_weights(enc, "mobilenet_v2_imagenet.pt")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import pickle
import pickletools
import re
import socket
import struct
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from mobileseg.errors import WeightsError

ENV_VAR = "MOBILESEG_ENCODER_WEIGHTS"
DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation: a blocked network fails fast instead of hanging for minutes
_HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's convention: <name>-<sha256 prefix>.pth


def safe_torch_load(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """Load a torch file with ``weights_only=True``, turning every failure into a clear :class:`WeightsError`.

    Why: ``torch.load`` on an untrusted pickle can execute arbitrary code. ``weights_only=True`` prevents that,
    but its errors are long and mention re-running with ``weights_only=False``, which is exactly the wrong
    advice for a file of unknown origin. We never offer that fallback.

    Args:
        path: the file to read.
        map_location: passed to ``torch.load`` (default ``'cpu'`` so GPU-saved files load anywhere).

    Returns:
        Whatever the file holds (tensors, dicts, lists, numbers, strings).

    Raises:
        WeightsError: the file is missing, is not a torch file, or holds objects that would run code.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsError(f"weights file not found: {p}")
    if not p.is_file():
        raise WeightsError(f"weights path is not a file: {p}")
    try:
        with warnings.catch_warnings():  # noise about pickle protocols of files we are about to refuse anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        imported = _pickled_globals(p)
        if imported:
            # Name the import torch actually refused when it says; else the first non-torch one in the file.
            refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
            shown = (
                refused.group(1)
                if refused
                else next((g for g in imported if not g.startswith(("torch.", "collections."))), imported[0])
            )
            raise WeightsError(
                f"{p} is not a plain weights file: it contains Python objects (e.g. {shown}) whose loading "
                f"could run code, which torch.load(weights_only=True) refuses. It was not loaded, for safety. "
                f"Re-save only the tensors (a state dict) from a trusted environment."
            ) from None
        raise WeightsError(f"{p} is not a PyTorch weights file (or it is corrupt); it was not loaded") from None
    except (RuntimeError, EOFError, KeyError, ValueError, UnicodeDecodeError, IndexError, struct.error) as e:
        # torch's own messages only help for zip-level damage; others (KeyError '101', bare EOFError) confuse.
        if p.stat().st_size == 0:
            reason = " (the file is empty)"
        elif isinstance(e, RuntimeError):
            reason = f" ({str(e).split('. ')[0][:160]})"
        else:
            reason = ""
        raise WeightsError(f"{p} is not a PyTorch weights file (or it is corrupt){reason}; it was not loaded") from None


def _pickled_globals(path: Path) -> list[str]:
    """Names a pickle (raw, or the ``data.pkl`` of a torch zip file) would import, found without unpickling.

    Why: ``weights_only`` refuses such files with messages that differ by pickle protocol (protocol 4+ even
    fails on framing first), so we inspect the opcodes ourselves to tell "would run code" from "corrupt".
    """
    streams: list[bytes] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                streams = [zf.read(n) for n in zf.namelist() if n.endswith(".pkl")]
        else:
            streams = [path.read_bytes()]
    except (OSError, zipfile.BadZipFile):
        return []
    found: list[str] = []
    for data in streams:
        buf = io.BytesIO(data)
        while buf.tell() < len(data):  # legacy torch files hold several pickles back to back
            strings: list[str] = []
            try:
                for op, arg, _pos in pickletools.genops(buf):
                    if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                        strings.append(str(arg))
                    elif op.name in ("GLOBAL", "INST"):
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
            except Exception:  # not (or no longer) a pickle stream: stop scanning this one
                break
    return found


def imagenet_weights_url() -> str:
    """URL of torchvision's ImageNet MobileNetV2 weights (``MobileNet_V2_Weights.IMAGENET1K_V1``)."""
    from torchvision.models import MobileNet_V2_Weights

    return MobileNet_V2_Weights.IMAGENET1K_V1.url


def imagenet_cache_path() -> Path:
    """Where torch hub keeps (or would keep) the ImageNet weights: ``<torch.hub.get_dir()>/checkpoints/<file>``."""
    filename = os.path.basename(urlparse(imagenet_weights_url()).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def resolve_imagenet_weights() -> Path:
    """Path of the ImageNet encoder weights: ``$MOBILESEG_ENCODER_WEIGHTS``, the hub cache, or a fresh download.

    Raises:
        WeightsError: the override points nowhere, or the download failed (message names the cache path and
            the offline alternatives).
    """
    override = os.environ.get(ENV_VAR, "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise WeightsError(f"${ENV_VAR} is set to {path}, which is not a file")
        return path
    cached = imagenet_cache_path()
    if cached.is_file():
        return cached
    _download(imagenet_weights_url(), cached)
    return cached


def _download(url: str, dest: Path) -> None:
    """One download attempt with a short socket timeout; any failure becomes a WeightsError without a traceback."""
    match = _HASH_REGEX.search(dest.name)
    hash_prefix = match.group(1) if match else None
    offline_hint = (
        f"To work offline, put a torchvision MobileNetV2 state dict there (e.g. a copy bundled with your "
        f"project or fetched on another machine), or pass encoder_weights=<path to the .pt file>, or set "
        f"${ENV_VAR}=<path>; encoder_weights=none trains from scratch."
    )
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(dest), hash_prefix, progress=True)
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = str(e).split("\n")[0][:160] or type(e).__name__
        raise WeightsError(
            f"ImageNet encoder weights are not cached at {dest} and downloading them from {url} failed "
            f"({reason}). {offline_hint}"
        ) from None
    except RuntimeError as e:  # torch.hub: hash mismatch, i.e. a truncated or altered download
        raise WeightsError(f"downloaded ImageNet weights failed the integrity check ({e}). {offline_hint}") from None
    finally:
        socket.setdefaulttimeout(previous)


def load_encoder_weights(encoder: nn.Module, weights: str | os.PathLike[str]) -> Path:
    """Load torchvision-layout MobileNetV2 weights into ``encoder`` (an encoder whose keys are ``features.N...``).

    Keys the encoder does not have (``classifier.*``, ``features.18.*``) are ignored, so a full torchvision
    ``mobilenet_v2`` state dict loads directly. Every encoder key must be present with the same shape; the
    first one that is not is named with both shapes, which is how a ``width_mult`` mismatch shows up.
    ``num_batches_tracked`` may be absent (older torchvision files lack it).

    Args:
        encoder: the module to fill in place.
        weights: ``'imagenet'`` or a path to a state dict file.

    Returns:
        The path that was loaded.

    Raises:
        WeightsError: the file cannot be found/read or does not fit the encoder.
    """
    path = resolve_imagenet_weights() if str(weights).lower() == "imagenet" else Path(weights).expanduser()
    state = safe_torch_load(path)
    if isinstance(state, Mapping) and "model" in state and "model_args" in state:
        raise WeightsError(
            f"{path} is a mobileseg checkpoint, not encoder weights; rebuild it with Segmenter.from_checkpoint()"
        )
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    own = encoder.state_dict()
    merged: dict[str, torch.Tensor] = {}
    for key, ours in own.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                merged[key] = ours
                continue
            raise WeightsError(
                f"{path} does not fit the MobileNetV2 encoder: key '{key}' is missing "
                f"(expected a torchvision mobilenet_v2 state dict with keys like 'features.0.0.weight')"
            )
        theirs = state[key]
        if theirs.shape != ours.shape:
            raise WeightsError(
                f"{path} does not fit the MobileNetV2 encoder: '{key}' has shape {tuple(theirs.shape)} in the "
                f"file but {tuple(ours.shape)} in the model (was the file made for a different width_mult?)"
            )
        merged[key] = theirs
    encoder.load_state_dict(merged, strict=True)
    return path


def is_pretrained(weights: str | os.PathLike[str] | None) -> bool:
    """False for the ``encoder_weights`` settings that mean "train from scratch" (``none``, empty, None).

    Example:
        >>> is_pretrained("imagenet"), is_pretrained("none"), is_pretrained(None)
        (True, False, False)
    """
    return ("" if weights is None else str(weights).strip()).lower() not in ("", "none")


def describe_encoder_weights(weights: str | os.PathLike[str] | None) -> str:
    """Where ``encoder_weights`` came from, in words that hold on any machine: a kind and a file *name*, no path.

    Why: a model card is shared with its run folder; ``../../weights/mnv2.pt`` or ``/home/me/...`` means nothing
    elsewhere, and saying "imagenet" when ``$MOBILESEG_ENCODER_WEIGHTS`` supplied the file would be wrong. A file
    is named with the first 12 hex digits of its SHA-256, so a reader can check they have the same one.

    Args:
        weights: the ``encoder_weights`` setting (``'imagenet'``, ``'none'``/``None`` or a path), resolved the way
            :func:`load_encoder_weights` resolves it (the environment variable is read now).

    Example:
        >>> describe_encoder_weights("none")
        'none (trained from scratch)'
    """
    if not is_pretrained(weights):
        return "none (trained from scratch)"
    text = str(weights).strip()
    if text.lower() == "imagenet":
        override = os.environ.get(ENV_VAR, "").strip()
        if override:
            return (
                f"from ${ENV_VAR}: {_name_and_hash(Path(override).expanduser())} (given for encoder_weights=imagenet)"
            )
        return "ImageNet (torchvision MobileNet_V2 IMAGENET1K_V1)"
    return f"a local file: {_name_and_hash(Path(text).expanduser())}"


def _name_and_hash(path: Path) -> str:
    """``name (sha256 0123456789ab)``, or the name alone when the file cannot be read (any more)."""
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return path.name
    return f"{path.name} (sha256 {digest.hexdigest()[:12]})"
