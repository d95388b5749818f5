"""mobileseg: MobileNetV2 + pix2pix semantic segmentation, from a folder of images and masks to a shippable model."""

__version__ = "0.1.0"
