"""X-CLIP model: encoders, temporal encoder, multi-grained similarity."""
from .features import TextFeatures, VideoFeatures
from .presets import PRESETS, build_clip
from .similarity import MultiGrainedSimilarity, attention_over_scores
from .temporal import TemporalTransformer
from .xclip import XCLIP

__all__ = ["XCLIP", "TextFeatures", "VideoFeatures", "MultiGrainedSimilarity", "TemporalTransformer",
           "attention_over_scores", "build_clip", "PRESETS"]
