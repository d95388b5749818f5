"""TorchScript export: ``torch.jit.trace`` at the model's input size, the metadata stored as an extra file."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from mobileseg.errors import ExportError
from mobileseg.models.model_file import ModelInfo

from .runtimes import METADATA_FILE, quiet


def export_torchscript(model: nn.Module, path: str | Path, info: ModelInfo) -> Path:
    """Trace ``model`` at its input size and save it with the metadata as the ``mobileseg.json`` extra file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = info.imgsz
    try:
        with quiet(), torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(model, torch.rand(1, info.in_channels, h, w), check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(info.to_metadata())})
    except Exception as e:
        raise ExportError(f"TorchScript export failed: {str(e).splitlines()[0][:300]}") from e
    return path


__all__ = ["export_torchscript"]
