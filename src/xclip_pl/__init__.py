"""xclip-pl: X-CLIP text-video retrieval on PyTorch Lightning."""
from xclip_pl.model import XCLIP, TextFeatures, VideoFeatures

__version__ = "0.1.0"
__all__ = ["XCLIP", "TextFeatures", "VideoFeatures", "__version__"]
