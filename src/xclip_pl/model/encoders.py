"""Hugging Face CLIP towers -> sentence, word and per-frame embeddings (not yet normalised).

Axes: ``a`` texts, ``w`` words, ``b`` videos, ``f`` frames, ``d`` projection dim.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn
from transformers import CLIPModel


class CLIPTowers(nn.Module):
    """The CLIP text and vision towers with the projections X-CLIP needs.

    Args:
        clip: a built ``CLIPModel`` (see :func:`xclip_pl.model.presets.build_clip`).
        text_padding_mask: pass the padding mask to the text transformer. The reference uses the causal
            mask only (``False``); only the features at pad positions differ.
    """

    def __init__(self, clip: CLIPModel, text_padding_mask: bool = False) -> None:
        super().__init__()
        self.clip = clip
        self.text_padding_mask = text_padding_mask

    @property
    def embed_dim(self) -> int:
        return self.clip.config.projection_dim

    @property
    def image_size(self) -> int:
        return self.clip.config.vision_config.image_size

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Sentence embedding [a, d] (at the EOT = argmax id, as the reference) and word embeddings [a, w, d]."""
        mask = attention_mask if self.text_padding_mask else None
        hidden = self.clip.text_model(input_ids=input_ids, attention_mask=mask).last_hidden_state  # [a, w, h], final LN applied
        word_emb = self.clip.text_projection(hidden)  # [a, w, d]
        eot = input_ids.argmax(dim=-1)  # [a]: EOT has the largest id in CLIP vocabularies
        sentence_emb = word_emb[torch.arange(word_emb.shape[0], device=word_emb.device), eot]  # [a, d]
        return sentence_emb, word_emb

    def encode_frames(self, pixel_values: Tensor) -> Tensor:
        """Per-frame projected CLS embeddings [b, f, d] from normalised pixels [b, f, 3, h, w]."""
        b = pixel_values.shape[0]
        images = rearrange(pixel_values, "b f c h w -> (b f) c h w")
        pooled = self.clip.vision_model(pixel_values=images).pooler_output  # [(b f), h], post-LN CLS
        return rearrange(self.clip.visual_projection(pooled), "(b f) d -> b f d", b=b)
