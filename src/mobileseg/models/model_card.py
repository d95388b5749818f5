"""The model card (``README.md``) of a pretrained folder: Hub front matter, what the model is, how to use it.

The Hub renders the card on the model's page and reads its YAML front matter (library, tags, pipeline) to list the
model; :func:`mobileseg.models.hub.save_pretrained` writes it from the folder's ``config.json`` contents.

Example:
    >>> config = {"model_args": {"width_mult": 1.0, "kernel_size": 3}, "names": ["background", "pet"],
    ...           "imgsz": [224, 224], "binary": True, "out_channels": 1, "mobileseg_version": "0.1",
    ...           "ignore_index": 255}
    >>> model_card(config, {}, [], None).splitlines()[1]
    'library_name: mobileseg'
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def model_card(config: Mapping[str, Any], info: Mapping[str, Any], images: list[str], extra: str | None) -> str:
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
        f"- Architecture: MobileNetV2 x{args['width_mult']:g}, {_decoder_line(args)}",
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
        "from mobileseg import Segmenter",
        "",
        f"model = Segmenter.from_pretrained({source!r})  # eval mode",
        f"logits = model(torch.rand(1, 3, {h}, {w}))  # RGB in [0, 1] -> (1, {config['out_channels']}, {h}, {w})",
        "```",
        "",
        "The weights are in safetensors format: loading them runs no code.",
    ]
    if extra:
        lines += ["", extra.strip()]
    return "\n".join(lines) + "\n"


def _decoder_line(args: dict[str, Any]) -> str:
    """The decoder in words: ``refine``, or the tutorial's with its kernel (files without the entry are tutorial)."""
    decoder = args.get("decoder", "tutorial")
    widths = args.get("decoder_channels")
    filters = f", stage filters {'-'.join(str(c) for c in widths)}" if widths else ""
    if decoder == "tutorial":
        return f"pix2pix decoder as in the tutorial (transposed convs, kernel {args.get('kernel_size', 3)}{filters})"
    full = ", the last at full resolution on the image" if widths and len(widths) == 5 else ""
    context = args.get("decoder_context", 0)
    pooled = f", a {context}-channel image-pooling branch" if context else ""
    return f"pix2pix-shaped decoder '{decoder}' (bilinear upsampling + 3x3 refinement convs{filters}{full}{pooled})"
