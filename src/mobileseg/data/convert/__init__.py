"""Label converters: COCO and LabelMe annotations -> class-index mask PNGs + a dataset YAML mobileseg reads.

The converters (:mod:`.coco`, :mod:`.labelme`) write the layout :func:`mobileseg.data.resolve_dataset` understands::

    out_dir/
        images/<stem>.<ext>   # the images, copied (or symlinked with link=True)
        masks/<stem>.png      # uint8 class indices: 0 = background, 1..K = classes, 255 = ignore
        data.yaml             # names (background first), ignore_index, mask_values (index -> itself)

Class names -> indices: background is 0; without ``names`` the classes are numbered 1..K in the order COCO lists
its categories (by id) or, for LabelMe, in sorted label order. With ``names`` (the full list, background first, as
in a dataset YAML) that order is used, and a label missing from it is an error unless ``unknown`` says to paint
it as background or ignore.

Overlaps: LabelMe shapes are painted in file order, later shapes on top (what LabelMe shows). COCO instance
annotations have no drawing order, so they are painted largest first: a small object lying on a large one stays
visible. COCO crowd regions (``iscrowd=1``) are painted first, as ``ignore`` by default.

Polygons are rasterised with pycocotools when it is installed (``pip install mobileseg[convert]``: COCO's own
definition of a polygon's pixels); without it a numpy scanline fill with the same pixel convention is used (a
pixel belongs to a polygon when its centre is inside), so a rectangle from (2, 1) to (6, 4) covers the same
4 x 3 pixels either way; along slanted edges the two can differ by a pixel (about 1 % of a polygon's pixels).
Pillow's polygon fill is not used: it also paints the boundary row and column (5 x 4 here), so masks would
change with the installed packages. Compressed COCO RLE needs pycocotools.

Example:
    >>> yaml_path = convert_coco("annotations/instances_train.json", "train2017", "datasets/mycoco")  # doctest: +SKIP
    >>> yaml_path = convert_labelme("labelme_folder", "datasets/mine")  # doctest: +SKIP
"""

from __future__ import annotations

from .coco import convert_coco
from .labelme import convert_labelme
from .layout import write_dataset_yaml
from .rasterize import polygon_mask

__all__ = ["convert_coco", "convert_labelme", "polygon_mask", "write_dataset_yaml"]
