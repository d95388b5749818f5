"""Datasets for segmentation: resolve (YAML, folder, preset, bundled sample), check, load, cache, augment.

Typical use (this is what the trainer does)::

    spec = load_dataset(cfg.data)                      # resolve + check; DataError lists every problem
    train = SegmentationDataset(spec, "train", cfg.data.imgsz, cache=cfg.data.cache,
                                transform=build_transforms(cfg.data, train=True, ignore_index=spec.ignore_index))
    train.prefill()                                    # optional: decode everything once, up front
    loader = DataLoader(train, batch_size=8, shuffle=True, num_workers=recommended_workers(cfg.data.cache))
"""

from .check import DataReport, check_dataset, load_dataset
from .dataset import SegmentationDataset, decode_sample, default_cache_dir, recommended_workers
from .files import preset_names, sample_root
from .loading import IMAGE_EXTENSIONS, DataError, load_image, to_rgb
from .resolve import resolve_dataset
from .spec import DatasetSpec, Sample
from .transforms import PairTransform, SeededAugment, build_transforms

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "DataReport",
    "DatasetSpec",
    "PairTransform",
    "Sample",
    "SeededAugment",
    "SegmentationDataset",
    "build_transforms",
    "check_dataset",
    "decode_sample",
    "default_cache_dir",
    "load_dataset",
    "load_image",
    "preset_names",
    "recommended_workers",
    "resolve_dataset",
    "sample_root",
    "to_rgb",
]
