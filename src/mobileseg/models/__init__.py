"""Model package: MobileNetV2 encoder, pix2pix decoder, the Segmenter that joins them, and safe weight loading.

Example:
    >>> from mobileseg.models import Segmenter
    >>> model = Segmenter(num_classes=1, encoder_weights=None)
    >>> model.format_summary()  # doctest: +SKIP
    'Segmenter (MobileNetV2 x1 + pix2pix, binary): 6.47M params (6.47M trainable), 3.51 GFLOPs at 224x224'
"""

from .decoder import Pix2PixDecoder, UpsampleBlock
from .encoder import MobileNetV2Encoder
from .segmenter import Segmenter
from .weights import WeightsError, load_encoder_weights, safe_torch_load

__all__ = [
    "MobileNetV2Encoder",
    "Pix2PixDecoder",
    "Segmenter",
    "UpsampleBlock",
    "WeightsError",
    "load_encoder_weights",
    "safe_torch_load",
]
