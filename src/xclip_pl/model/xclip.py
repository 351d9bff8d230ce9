"""X-CLIP: CLIP towers + temporal encoder + multi-grained AOSM similarity.

Axes: ``a`` texts, ``b`` videos, ``w`` words, ``f`` frames, ``d`` embedding dim.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from transformers import CLIPConfig

from xclip_pl.model.encoders import CLIPTowers
from xclip_pl.model.features import TextFeatures, VideoFeatures
from xclip_pl.model.freezing import freeze_clip_layers
from xclip_pl.model.official import (
    KEYS,
    OfficialCheckpoint,
    check_explicit_arguments,
    load_official_weights,
    read_official_checkpoint,
)
from xclip_pl.model.precision import ClipDtype, cast_towers_fp16
from xclip_pl.model.presets import build_clip
from xclip_pl.model.similarity import Kernel, MultiGrainedSimilarity, plan_blocks
from xclip_pl.model.temporal import TemporalTransformer, l2_normalize, masked_mean

TemporalInit = Literal["clip_text", "random"]
DEFAULT_CLIP = "tiny"
DEFAULT_TEMPORAL_LAYERS = 4
DEFAULT_TEMPORAL_INIT: TemporalInit = "clip_text"


class XCLIP(nn.Module):
    """X-CLIP (Ma et al., ACM MM 2022) on Hugging Face CLIP.

    Args:
        clip: CLIP backbone: a random preset (``tiny``, ``small``, ``random-vit-b-32``, ``random-vit-b-16``),
            a local Hugging Face CLIP directory, an OpenAI CLIP file, or a hub id such as
            ``openai/clip-vit-base-patch32``. null: ``tiny``, or the CLIP that ``official_checkpoint`` /
            ``clip_config`` describe; given together with ``official_checkpoint``, its sizes must be the
            checkpoint's (only its config is read).
        max_words: caption length L in tokens, SOT and EOT included (sizes the L x L AOSM matrices; linked from
            ``data.max_words``).
        max_frames: frames per video F (sizes the F x F AOSM matrices; linked from ``data.max_frames``).
        temporal_layers: temporal transformer blocks (paper: 4). null: 4, or the checkpoint's number with
            ``official_checkpoint`` (an explicit value must equal it).
        temporal_layer_norm_eps: LayerNorm epsilon of the temporal blocks (reference: 1e-12).
        temporal_init: ``clip_text`` copies CLIP text blocks 0..k-1 and the text position table into the
            temporal encoder when widths match (reference); ``random`` starts it fresh. null: ``clip_text``;
            must be null with ``official_checkpoint``, which holds the temporal weights.
        temperature: AOSM softmax temperature (paper: 0.01).
        mask_padding: mask pad tokens and padded frames in AOSM (reference: false).
        frame_features: frames entering AOSM: ``clip`` (before the temporal encoder, reference) or
            ``temporal`` (after it, the paper's figure).
        text_padding_mask: give the text transformer a padding mask (reference: false, causal only).
        encode_padded_frames: run CLIP on padded frame slots as mean-colour images (reference: true);
            false skips them (zero features; meant for ``mask_padding: true``).
        official_checkpoint: optional reference X-CLIP ``pytorch_model.bin.N`` to initialise every weight from;
            the CLIP sizes and temporal depth are read from its tensors (no pretrained weights are loaded).
        clip_config: CLIP sizes as a ``CLIPConfig`` dict, built with random weights: what ``xclip-pl convert``
            writes into its checkpoint so that it loads on any machine (the checkpoint's weights replace them).
            Needs ``clip: null`` and ``official_checkpoint: null``.
        clip_dtype: ``fp16`` = the reference's pure-fp16 CLIP towers (fp16 weights, gradients and
            optimiser state; LayerNorms in fp32; needs ``trainer.precision: 32-true``); ``fp32`` = fp32
            master weights, combine with ``trainer.precision: bf16-mixed`` (retune the CLIP lr).
        freeze_layers: freeze the CLIP embedding stage and encoder layers below this index (reference: 0,
            which still freezes the embeddings, patch projection, class token and pre-LN); -1 freezes nothing.
        activation_checkpointing: recompute each CLIP encoder layer's activations during the backward pass instead
            of keeping them (non-reentrant ``torch.utils.checkpoint``, in training only): the same gradients for
            much less activation memory (batch 256 of ViT-B/32 fits in ~16 GiB) at the cost of a second forward
            of the towers. The reference keeps them (false).
    """

    def __init__(
        self,
        clip: str | None = None,
        max_words: int = 32,
        max_frames: int = 12,
        temporal_layers: int | None = None,
        temporal_layer_norm_eps: float = 1e-12,
        temporal_init: TemporalInit | None = None,
        temperature: float = 0.01,
        mask_padding: bool = False,
        frame_features: Literal["clip", "temporal"] = "clip",
        text_padding_mask: bool = False,
        encode_padded_frames: bool = True,
        official_checkpoint: str | None = None,
        clip_config: dict | None = None,
        clip_dtype: ClipDtype = "fp32",
        freeze_layers: int = -1,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}  # what built it (primitive)
        _check_clip_sources(clip, clip_config, official_checkpoint)
        official = read_official_checkpoint(official_checkpoint, max_words, max_frames) if official_checkpoint else None
        source, layers, init = _clip_and_temporal(clip, clip_config, temporal_layers, temporal_init, official)
        self.towers = CLIPTowers(build_clip(source), text_padding_mask=text_padding_mask)
        text_cfg = self.towers.clip.config.text_config
        dim = self.towers.embed_dim
        if max_words > text_cfg.max_position_embeddings:
            raise ValueError(f"max_words={max_words} exceeds the text tower's {text_cfg.max_position_embeddings} positions")
        self.temporal = TemporalTransformer(dim, layers, text_cfg.max_position_embeddings, temporal_layer_norm_eps)
        self.similarity_head = MultiGrainedSimilarity(dim, max_words, max_frames, temperature, mask_padding)
        self.frame_features = frame_features
        self.encode_padded_frames = encode_padded_frames
        self.clip_dtype = clip_dtype
        if init == "clip_text":
            self.init_temporal_from_text_tower()
        if official is not None:
            load_official_weights(self, official)
        if clip_dtype == "fp16":
            cast_towers_fp16(self.towers.clip)  # after the temporal encoder copied the fp32 text blocks
        freeze_clip_layers(self.towers.clip, freeze_layers)
        if activation_checkpointing:
            enable_activation_checkpointing(self.towers.clip)

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
        (without gradients; see the backend's ``bytes_per_element``), or else blocks of about
        ``DEFAULT_BLOCK_ELEMENTS`` frame-word elements on CUDA (2^28: ~2 GiB for bf16 features) and
        ``DEFAULT_FUSED_BLOCK_ELEMENTS`` (2^23) with the fused CPU kernel, ``DEFAULT_CPU_BLOCK_ELEMENTS``
        (2^20) with torch ops on CPU (``model/similarity/tiling.py``). Any block size gives the same values up to
        float rounding. ``compile`` runs the block function through ``torch.compile`` (CUDA, no grad).
        ``kernel``: ``"auto"`` runs the AOSM reductions in the fused C++ kernel on CPU without gradients
        (built on first use, ~20 s once per machine; torch ops where it cannot build) and torch ops on
        GPUs, ``"torch"`` never uses a fused kernel, ``"fused"`` always (an error where it cannot): the
        C++ kernel on CPU, the Triton kernels on CUDA (``model/similarity/backends/triton_kernels.py``; not yet timed on a GPU,
        which is why ``auto`` does not pick them there).
        """
        head = self.similarity_head
        ta, tb = plan_blocks(head, head.backend_for(text.word_emb, kernel), text, video, chunk_size, memory_budget_mb)
        return head.blockwise(text, video, self.logit_scale, ta, tb, compile=compile, kernel=kernel)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, pixel_values: Tensor, frame_mask: Tensor) -> Tensor:
        """Logits [a, b] between a batch of captions and a batch of videos."""
        return self.similarity(self.encode_text(input_ids, attention_mask), self.encode_video(pixel_values, frame_mask))

    @classmethod
    def from_official_checkpoint(cls, path: str | Path, max_words: int = 32, max_frames: int = 12, clip: str | None = None,
                                 temporal_layers: int | None = None, temporal_init: str | None = None, **kwargs) -> "XCLIP":
        """Build X-CLIP from a state dict saved by the reference code (``pytorch_model.bin.N``): the same as
        ``XCLIP(official_checkpoint=path, ...)``. The CLIP sizes and the number of temporal blocks are read from
        its tensors (no pretrained weights are loaded); ``clip`` / ``temporal_layers`` given explicitly must agree
        with them, and ``temporal_init`` must be None (nothing is left to initialise). Other keyword arguments
        are those of :class:`XCLIP`."""
        return cls(clip=clip, max_words=max_words, max_frames=max_frames, temporal_layers=temporal_layers,
                   temporal_init=temporal_init, official_checkpoint=str(path), **kwargs)


def _check_clip_sources(clip: str | None, clip_config: dict | None, official_checkpoint: str | None) -> None:
    """``clip_config`` describes the CLIP alone: with ``official_checkpoint`` or ``clip`` it is an error."""
    if clip_config is None:
        return
    if official_checkpoint:
        raise ValueError(f"{KEYS}.official_checkpoint and {KEYS}.clip_config both describe the CLIP: set "
                         f"{KEYS}.clip_config: null (the checkpoint's sizes are used)")
    if clip is not None:
        raise ValueError(f"{KEYS}.clip={clip!r} and {KEYS}.clip_config both describe the CLIP: set one of them "
                         "to null (clip_config comes with checkpoints written by `xclip-pl convert`)")


def _clip_and_temporal(clip: str | None, clip_config: dict | None, temporal_layers: int | None,
                       temporal_init: TemporalInit | None, official: OfficialCheckpoint | None
                       ) -> tuple[str | CLIPConfig, int, TemporalInit]:
    """What builds the CLIP, the temporal depth and its initialisation: the checkpoint's (explicit values
    checked against it), else ``clip_config``, else ``clip``, else the defaults."""
    if official is not None:
        check_explicit_arguments(official.path, official.clip_config, official.temporal_layers, clip, temporal_layers,
                                 temporal_init)
        return official.clip_config, official.temporal_layers, "random"  # every weight comes from the checkpoint
    source = CLIPConfig.from_dict(clip_config) if clip_config is not None else _default(clip, DEFAULT_CLIP)
    return source, _default(temporal_layers, DEFAULT_TEMPORAL_LAYERS), _default(temporal_init, DEFAULT_TEMPORAL_INIT)


def _default(value, default):
    """``value``, or ``default`` where it is None (arguments whose None means "the usual value")."""
    return default if value is None else value


def enable_activation_checkpointing(clip: nn.Module) -> None:
    """Checkpoint every encoder layer of both towers, non-reentrant (transformers >= 5 names it
    ``activation_checkpointing_enable``; older versions ``gradient_checkpointing_enable``)."""
    if hasattr(clip, "activation_checkpointing_enable"):
        clip.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        clip.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
