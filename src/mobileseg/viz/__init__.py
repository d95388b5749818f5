"""Pictures of what a model does: metric curves, prediction grids, overlays, confusion matrices, label shares.

The figures are in topic modules (:mod:`.training`, :mod:`.predictions`, :mod:`.confusion`, :mod:`.labels`,
drawn with the pieces in :mod:`.figure`); this package exports them with the colour and overlay helpers they use.
All functions take plain numpy arrays / lists and never touch the model. Each figure has a ``figure_*`` builder
that returns a matplotlib :class:`~matplotlib.figure.Figure` (made without pyplot, so it is safe in a server
thread and needs no ``plt.close``) and a thin ``plot_*`` that saves it as a PNG and returns the path.

Conventions every figure follows, so a person can read it without knowing the code:

* a title carrying the run name (``title=``);
* a legend wherever colours mean classes (:func:`legend_entries` gives the same entries to the web page);
* panels keep each image's aspect ratio: pass the original ``(height, width)`` per image as ``sizes=`` when the
  arrays were resized to the square model input, and the panels are drawn at the original shape;
* right and wrong are visible at a glance: TP/FP/FN colours for binary, a wrong-pixel layer for multi-class,
  outlines of predicted regions on overlays and the per-image IoU on each row.

Colours: :func:`default_palette` gives classes colours at least 20 CIE76 units apart in CIELAB (checked by
:func:`min_lab_distance`) for up to 20 classes; class 0 is black (and left unpainted in overlays) only when it is
a background class. Ignored (void) pixels are drawn in :data:`IGNORE_COLOR` and named ``ignored`` in legends.
"""

from __future__ import annotations

from mobileseg.overlays import boundaries, colorize, error_map, image_iou, overlay, pick_worst
from mobileseg.palette import (
    BACKGROUND_COLOR,
    IGNORE_COLOR,
    MIN_LAB_DISTANCE,
    default_palette,
    is_background,
    lab_distance,
    legend_entries,
    min_lab_distance,
    srgb_to_lab,
)

from .confusion import figure_confusion_matrix, plot_confusion_matrix
from .labels import figure_label_distribution, plot_label_distribution
from .predictions import figure_prediction_grid, plot_prediction_grid
from .training import figure_results, figure_train_batch, plot_results, plot_train_batch

__all__ = [
    "BACKGROUND_COLOR",
    "IGNORE_COLOR",
    "MIN_LAB_DISTANCE",
    "boundaries",
    "colorize",
    "default_palette",
    "error_map",
    "figure_confusion_matrix",
    "figure_label_distribution",
    "figure_prediction_grid",
    "figure_results",
    "figure_train_batch",
    "image_iou",
    "is_background",
    "lab_distance",
    "legend_entries",
    "min_lab_distance",
    "overlay",
    "pick_worst",
    "plot_confusion_matrix",
    "plot_label_distribution",
    "plot_prediction_grid",
    "plot_results",
    "plot_train_batch",
    "srgb_to_lab",
]
