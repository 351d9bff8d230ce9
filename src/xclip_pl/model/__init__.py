"""X-CLIP model: encoders, temporal encoder, multi-grained similarity."""
from xclip_pl.model.features import TextFeatures, VideoFeatures
from xclip_pl.model.presets import PRESETS, build_clip
from xclip_pl.model.similarity import MultiGrainedSimilarity, attention_over_scores
from xclip_pl.model.temporal import TemporalTransformer
from xclip_pl.model.xclip import XCLIP

__all__ = ["XCLIP", "TextFeatures", "VideoFeatures", "MultiGrainedSimilarity", "TemporalTransformer",
           "attention_over_scores", "build_clip", "PRESETS"]
