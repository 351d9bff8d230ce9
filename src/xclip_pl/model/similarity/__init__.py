"""The multi-grained similarity engine: the head's parameters (:mod:`.head`), the one tiling loop that
owns block sizing (:mod:`.tiling`), and the per-block backends registered by name (:mod:`.backends`:
``torch``, the readable reference; ``cpu``, the fused C++ kernel; ``triton``)."""
from xclip_pl.model.similarity.backends import SIMILARITY_BACKENDS, Kernel, SimilarityBackend, select_backend
from xclip_pl.model.similarity.head import MultiGrainedSimilarity, attention_over_scores
from xclip_pl.model.similarity.prepared import PreparedText, PreparedVideo
from xclip_pl.model.similarity.tiling import (
                                              block_sizes,
                                              choose_block_sizes,
                                              default_block_elements,
                                              plan_blocks,
                                              tiled_logits,
)

__all__ = ["MultiGrainedSimilarity", "attention_over_scores", "Kernel", "SIMILARITY_BACKENDS", "SimilarityBackend",
           "select_backend", "block_sizes", "choose_block_sizes", "default_block_elements", "plan_blocks",
           "tiled_logits", "PreparedText", "PreparedVideo"]
