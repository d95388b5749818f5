"""The text of ``loss=``: ``bce``, ``bce+dice``, ``bce:1+dice:0.5``, ``auto``; parsed once, checked early.

A leaf module (no torch), so the config validates a loss string when it is read, before any work starts, while
:mod:`mobileseg.engine.loss` builds the terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mobileseg.errors import ConfigError

LOSS_NAMES = ("bce", "ce", "dice", "focal", "lovasz", "tversky")
PIXEL_XENT = ("bce", "ce")  # two spellings of one term


def parse_loss_spec(text: Any) -> list[tuple[str, float]]:
    """Parse a loss string into ``[(name, weight), ...]``; ``auto`` parses to ``[('auto', 1.0)]``.

    Args:
        text: ``'bce'``, ``'bce+dice'``, ``'bce:1+dice:0.5'``, ``'auto'`` ... (case and spaces are ignored).

    Raises:
        ConfigError: naming the bad part: an unknown loss, a weight that is not a positive number, a term given
            twice (``bce`` and ``ce`` count as the same term), or ``auto`` inside a sum.

    Example:
        >>> parse_loss_spec("BCE + dice:0.5")
        [('bce', 1.0), ('dice', 0.5)]
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"loss must be text such as 'bce', 'bce+dice' or 'bce:1+dice:0.5' (got {text!r})")
    spec = text.strip().lower()
    if spec == "auto":
        return [("auto", 1.0)]
    terms: list[tuple[str, float]] = []
    seen: set[str] = set()
    for part in spec.split("+"):
        name, sep, weight_text = (s.strip() for s in part.partition(":"))
        if not name:
            raise ConfigError(f"loss '{text}': empty term (terms are joined by '+', e.g. 'bce+dice')")
        if name == "auto":
            raise ConfigError(f"loss '{text}': 'auto' stands alone; it cannot be part of a sum")
        if name not in LOSS_NAMES:
            raise ConfigError(f"loss '{text}': unknown loss '{name}'; choose from {', '.join(LOSS_NAMES)} or auto")
        weight = 1.0
        if sep:
            try:
                weight = float(weight_text)
            except ValueError:
                weight = math.nan
            if not (math.isfinite(weight) and weight > 0):
                raise ConfigError(f"loss '{text}': the weight of '{name}' must be a number > 0 (got '{weight_text}')")
        key = "ce" if name in PIXEL_XENT else name
        if key in seen:
            raise ConfigError(f"loss '{text}': '{name}' appears twice (bce and ce are the same term)")
        seen.add(key)
        terms.append((name, weight))
    return terms


def format_loss_spec(terms: Sequence[tuple[str, float]]) -> str:
    """Canonical text of parsed terms, weight 1 left out: ``[('bce', 1.0), ('dice', 0.5)]`` -> ``'bce+dice:0.5'``."""
    return "+".join(name if w == 1 else f"{name}:{w:g}" for name, w in terms)


__all__ = ["LOSS_NAMES", "PIXEL_XENT", "format_loss_spec", "parse_loss_spec"]
