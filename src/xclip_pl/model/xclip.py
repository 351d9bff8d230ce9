"""X-CLIP: CLIP towers + temporal encoder + multi-grained AOSM similarity.

Axes: ``a`` texts, ``b`` videos, ``w`` words, ``f`` frames, ``d`` embedding dim.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from transformers import CLIPConfig, CLIPModel

from xclip_pl.model.blocks import block_sizes, default_block_elements
from xclip_pl.model.encoders import CLIPTowers
from xclip_pl.model.features import TextFeatures, VideoFeatures
from xclip_pl.model.presets import build_clip
from xclip_pl.model.similarity import Kernel, MultiGrainedSimilarity
from xclip_pl.model.temporal import TemporalTransformer, l2_normalize, masked_mean


class XCLIP(nn.Module):
    """X-CLIP (Ma et al., ACM MM 2022) on Hugging Face CLIP.

    Args:
        clip: a preset name (random weights: ``tiny``, ``small``, ``random-vit-b-32``, ...), a local
            Hugging Face CLIP directory or a hub id, or a built ``CLIPModel`` / ``CLIPConfig``.
        max_words: caption length L in tokens, SOT and EOT included (sizes the L x L AOSM matrices).
        max_frames: frames per video F (sizes the F x F AOSM matrices).
        temporal_layers: blocks in the temporal encoder (reference: 4).
        temporal_layer_norm_eps: LayerNorm epsilon in the temporal blocks (reference: 1e-12).
        temporal_init: ``clip_text`` copies CLIP text blocks 0..k-1 and the text position table into
            the temporal encoder when widths match (reference); ``random`` initialises them fresh.
        temperature: AOSM softmax temperature (reference: 0.01).
        mask_padding: mask pad words and padded frames in AOSM (reference: ``False``).
        frame_features: frame embeddings entering AOSM: ``clip`` (before the temporal encoder, reference)
            or ``temporal`` (after it, as drawn in the paper's Fig. 2).
        text_padding_mask: give the text transformer a padding mask (reference: ``False``, causal only).
        encode_padded_frames: run CLIP on padded frame slots (mean-colour images; reference: ``True``).
            ``False`` skips them (their features are zero): less compute for short videos, meant for
            ``mask_padding=True``, where padded frames never enter a score.
    """

    def __init__(
        self,
        clip: str | CLIPModel | CLIPConfig = "tiny",
        max_words: int = 32,
        max_frames: int = 12,
        temporal_layers: int = 4,
        temporal_layer_norm_eps: float = 1e-12,
        temporal_init: Literal["clip_text", "random"] = "clip_text",
        temperature: float = 0.01,
        mask_padding: bool = False,
        frame_features: Literal["clip", "temporal"] = "clip",
        text_padding_mask: bool = False,
        encode_padded_frames: bool = True,
    ) -> None:
        super().__init__()
        self.towers = CLIPTowers(build_clip(clip), text_padding_mask=text_padding_mask)
        text_cfg = self.towers.clip.config.text_config
        dim = self.towers.embed_dim
        if max_words > text_cfg.max_position_embeddings:
            raise ValueError(f"max_words={max_words} exceeds the text tower's {text_cfg.max_position_embeddings} positions")
        self.temporal = TemporalTransformer(dim, temporal_layers, text_cfg.max_position_embeddings, temporal_layer_norm_eps)
        self.similarity_head = MultiGrainedSimilarity(dim, max_words, max_frames, temperature, mask_padding)
        self.frame_features = frame_features
        self.encode_padded_frames = encode_padded_frames
        if temporal_init == "clip_text":
            self.init_temporal_from_text_tower()

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.towers.clip.logit_scale

    @property
    def max_words(self) -> int:
        return self.similarity_head.max_words

    @property
    def max_frames(self) -> int:
        return self.similarity_head.max_frames

    def init_temporal_from_text_tower(self) -> bool:
        """Copy text blocks 0..k-1 and the text position table (reference 1.10). False if widths differ."""
        text = self.towers.clip.text_model
        pos = text.embeddings.position_embedding.weight
        if pos.shape[1] != self.towers.embed_dim or len(self.temporal.blocks) > len(text.encoder.layers):
            return False
        with torch.no_grad():
            self.temporal.frame_position.weight.copy_(pos)
            for block, layer in zip(self.temporal.blocks, text.encoder.layers):
                block.load_state_dict(layer.state_dict(), strict=True)
        return True

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        """Normalised sentence [a, d] and word [a, w, d] embeddings of token ids [a, w]."""
        sentence_emb, word_emb = self.towers.encode_text(input_ids, attention_mask)
        return TextFeatures(l2_normalize(sentence_emb.float()), l2_normalize(word_emb.float()), attention_mask.bool())

    def encode_video(self, pixel_values: Tensor, frame_mask: Tensor) -> VideoFeatures:
        """Video [b, d] and frame [b, f, d] embeddings of normalised frames [b, f, 3, h, w] with mask [b, f]."""
        frame_mask = frame_mask.bool()
        raw = self.encode_frames(pixel_values, frame_mask)  # [b, f, d]
        contextual = self.temporal(raw, frame_mask)  # [b, f, d]
        video_emb = l2_normalize(masked_mean(l2_normalize(contextual), frame_mask))  # [b, d]
        frame_emb = raw if self.frame_features == "clip" else contextual
        return VideoFeatures(video_emb, l2_normalize(frame_emb), frame_mask)

    def encode_frames(self, pixel_values: Tensor, frame_mask: Tensor) -> Tensor:
        """Raw CLIP frame embeddings [b, f, d] in fp32; padded slots encoded or zero (``encode_padded_frames``)."""
        if self.encode_padded_frames or bool(frame_mask.all()):
            return self.towers.encode_frames(pixel_values).float()
        raw = pixel_values.new_zeros((*frame_mask.shape, self.towers.embed_dim), dtype=torch.float32)
        if frame_mask.any():
            valid = pixel_values[frame_mask]  # [n, 3, h, w], the decoded frames only
            raw[frame_mask] = self.towers.encode_frames(valid[None]).float()[0]
        return raw

    def similarity(self, text: TextFeatures, video: VideoFeatures, chunk_size: int | None = None,
                   memory_budget_mb: float | None = None, compile: bool = False, kernel: Kernel = "auto") -> Tensor:
        """Logits [a, b] (logit scale applied, fp32) on the features' device, in their dtype.

        The texts x videos matrix is computed in blocks that bound peak memory: ``chunk_size`` texts and
        ``chunk_size`` videos per block, or else blocks whose temporaries fit ``memory_budget_mb`` MiB
        (without gradients; see ``MultiGrainedSimilarity.bytes_per_element``), or else blocks of about
        ``DEFAULT_BLOCK_ELEMENTS`` frame-word elements on CUDA (2^28: ~2 GiB for bf16 features) and
        ``DEFAULT_FUSED_BLOCK_ELEMENTS`` (2^23) with the fused CPU kernel, ``DEFAULT_CPU_BLOCK_ELEMENTS``
        (2^20) with torch ops on CPU. Any block size gives the same values up to
        float rounding. ``compile`` runs the block function through ``torch.compile`` (CUDA, no grad).
        ``kernel``: ``"auto"`` runs the AOSM reductions in the fused C++ kernel on CPU without gradients
        (built on first use, ~20 s once per machine; torch ops where it cannot build) and torch ops on
        GPUs, ``"torch"`` never uses a fused kernel, ``"fused"`` always (an error where it cannot): the
        C++ kernel on CPU, the Triton kernels on CUDA (``model/triton_kernel.py``; not yet timed on a GPU,
        which is why ``auto`` does not pick them there).
        """
        head = self.similarity_head
        fused = head.uses_fused_kernel(text.word_emb, kernel)
        ta, tb = _block_sizes(len(text), len(video), self.max_words, self.max_frames, chunk_size, memory_budget_mb,
                              head.bytes_per_element(text.word_emb.dtype, fused), default_block_elements(text.word_emb, fused))
        return head.blockwise(text, video, self.logit_scale, ta, tb, compile=compile, kernel=kernel)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, pixel_values: Tensor, frame_mask: Tensor) -> Tensor:
        """Logits [a, b] between a batch of captions and a batch of videos."""
        return self.similarity(self.encode_text(input_ids, attention_mask), self.encode_video(pixel_values, frame_mask))

    @classmethod
    def from_official_checkpoint(cls, path: str | Path, max_words: int = 32, max_frames: int = 12, clip: str | None = None,
                                 temporal_layers: int | None = None, temporal_init: str | None = None, **kwargs) -> "XCLIP":
        """Build X-CLIP from a state dict saved by the reference code (``pytorch_model.bin.N``). The CLIP sizes
        and the number of temporal blocks are read from its tensors (no pretrained weights are loaded);
        ``clip`` / ``temporal_layers`` given explicitly must agree with them, and ``temporal_init`` must be
        None (nothing is left to initialise). Other keyword arguments are those of :class:`XCLIP`."""
        from xclip_pl.model.official import load_official_checkpoint

        return load_official_checkpoint(cls, path, max_words=max_words, max_frames=max_frames, clip=clip,
                                        temporal_layers=temporal_layers, temporal_init=temporal_init, **kwargs)


def _block_sizes(a: int, b: int, words: int, frames: int, chunk_size: int | None, memory_budget_mb: float | None,
                 bytes_per_element: int, default_elements: int) -> tuple[int, int]:
    """Texts and videos per block: ``chunk_size`` each; or the largest square-ish GEMM block whose
    frame-word temporaries fit ``memory_budget_mb``; or blocks of ``default_elements`` elements."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size, chunk_size
    if memory_budget_mb is not None:
        if memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
        max_elements = int(memory_budget_mb * 2**20) // bytes_per_element
    else:
        max_elements = default_elements
    return block_sizes(a, b, words, frames, max_elements)
