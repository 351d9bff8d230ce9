"""The "seqTransf" temporal encoder: frame positions, pre-LN transformer blocks, residual, masked mean.

Axes: ``b`` videos, ``f`` frames, ``d`` embedding dim, ``h`` heads, ``e`` head dim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

MASK_VALUE = -1e6  # the reference's additive key-padding value


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class TemporalMLP(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = QuickGELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TemporalAttention(nn.Module):
    """Multi-head self-attention with Hugging Face CLIP parameter names (q/k/v/out_proj)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: Tensor, key_bias: Tensor) -> Tensor:
        """x [b, f, d]; key_bias [b, 1, 1, f] additive bias on the keys."""
        q, k, v = (rearrange(p(x), "b f (h e) -> b h f e", h=self.heads) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias.to(q.dtype))  # [b, h, f, e]
        return self.out_proj(rearrange(out, "b h f e -> b f (h e)"))


class TemporalBlock(nn.Module):
    """Pre-LN residual block: x + attn(LN(x)), then x + MLP(LN(x)); same names as HF ``CLIPEncoderLayer``."""

    def __init__(self, dim: int, heads: int, layer_norm_eps: float) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.self_attn = TemporalAttention(dim, heads)
        self.layer_norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.mlp = TemporalMLP(dim)

    def forward(self, x: Tensor, key_bias: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), key_bias)
        return x + self.mlp(self.layer_norm2(x))


class TemporalTransformer(nn.Module):
    """Y = Blocks(X + P) + X over the frames of each video, then masked mean pooling.

    Args:
        dim: embedding width (the CLIP projection dim).
        num_layers: number of blocks (4 in the reference). 0 leaves ``2 X + P`` (the residual sum), which is
            not the reference's mean pooling ("meanP"): the positions still enter.
        max_positions: rows of the frame position table (77 in the reference, copied from CLIP text).
        layer_norm_eps: LayerNorm epsilon inside the blocks (1e-12 in the reference).
    """

    def __init__(self, dim: int, num_layers: int = 4, max_positions: int = 77, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.frame_position = nn.Embedding(max_positions, dim)
        heads = max(1, dim // 64)
        self.blocks = nn.ModuleList(TemporalBlock(dim, heads, layer_norm_eps) for _ in range(num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, frame_emb: Tensor, frame_mask: Tensor) -> Tensor:
        """Contextualised frames [b, f, d] from raw frame embeddings [b, f, d] and mask [b, f]."""
        n_frames = frame_emb.shape[1]
        if n_frames > self.frame_position.num_embeddings:
            raise ValueError(f"{n_frames} frames exceed the {self.frame_position.num_embeddings} frame positions")
        x = frame_emb + self.frame_position.weight[:n_frames]  # [b, f, d]
        key_bias = rearrange((~frame_mask).to(x.dtype) * MASK_VALUE, "b f -> b 1 1 f")
        for block in self.blocks:
            x = block(x, key_bias)
        return x + frame_emb  # residual without the position embedding, as the reference


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of [b, f, d] over the frames where mask [b, f] is True; an all-masked row gives 0."""
    weights = mask.to(x.dtype).unsqueeze(-1)  # [b, f, 1]
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # [b, d]


def l2_normalize(x: Tensor) -> Tensor:
    """x / ||x|| over the last axis. Equal to the reference's division for any non-degenerate vector;
    an all-zero vector (a video with no decodable frame) stays zero instead of becoming NaN."""
    return F.normalize(x, dim=-1, eps=1e-12)
