"""Model package: MobileNetV2 encoder, pix2pix decoder, the Segmenter that joins them, and safe weight loading.

Example:
    >>> from mobileseg.models import Segmenter
    >>> model = Segmenter(num_classes=1, encoder_weights=None)
    >>> model.format_summary()  # doctest: +SKIP
    'Segmenter (MobileNetV2 x1 + pix2pix, binary): 6.47M params (6.47M trainable), 3.51 GFLOPs at 224x224'
"""

from .decoder import Pix2PixDecoder, RefineBlock, RefineDecoder, UpsampleBlock, build_decoder
from .encoder import MobileNetV2Encoder
from .segmenter import Segmenter
from .weights import WeightsError, load_encoder_weights, safe_torch_load

__all__ = [
    "MobileNetV2Encoder",
    "Pix2PixDecoder",
    "RefineBlock",
    "RefineDecoder",
    "Segmenter",
    "UpsampleBlock",
    "WeightsError",
    "build_decoder",
    "load_encoder_weights",
    "safe_torch_load",
]
