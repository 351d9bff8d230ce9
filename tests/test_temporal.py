"""The seqTransf temporal encoder (src/xclip_pl/model/temporal.py) against Hugging Face's CLIPEncoderLayer
(whose parameter names the blocks share), a transcription of ``Y = Blocks(X + P) + X``, and per-element loops
for ``masked_mean`` / ``l2_normalize``."""
import math

import pytest
import torch
from transformers import CLIPTextConfig
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from xclip_pl.model.temporal import (
    MASK_VALUE,
    QuickGELU,
    TemporalBlock,
    TemporalTransformer,
    l2_normalize,
    masked_mean,
)


def frame_mask(valid: list[int], frames: int) -> torch.Tensor:
    return torch.arange(frames)[None, :] < torch.tensor(valid)[:, None]


def randomize(module: torch.nn.Module, std: float = 0.2) -> None:
    """Larger than the 0.02 init so that attention weights, LayerNorm affines and biases all matter."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            centre = 1.0 if "layer_norm" in name and name.endswith("weight") else 0.0
            p.copy_(centre + std * torch.randn_like(p))


def hf_layer(block: TemporalBlock, dim: int, heads: int, eps: float) -> CLIPEncoderLayer:
    cfg = CLIPTextConfig(hidden_size=dim, num_attention_heads=heads, intermediate_size=4 * dim,
                         hidden_act="quick_gelu", layer_norm_eps=eps, attention_dropout=0.0)
    cfg._attn_implementation = "eager"
    layer = CLIPEncoderLayer(cfg).eval()
    layer.load_state_dict(block.state_dict(), strict=True)
    return layer


def hf_additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """[b, f] bool -> [b, 1, f, f] additive key mask (every query sees the same keys)."""
    b, f = mask.shape
    bias = (~mask).float() * MASK_VALUE
    return bias[:, None, None, :].expand(b, 1, f, f)


# ---------------------------------------------------------------------------------------------- helpers


def test_quick_gelu_formula():
    x = torch.linspace(-4, 4, 17)
    expected = torch.tensor([v * (1.0 / (1.0 + math.exp(-1.702 * v))) for v in x.tolist()])
    torch.testing.assert_close(QuickGELU()(x), expected)


def test_masked_mean_equals_a_loop_over_valid_frames():
    x = torch.randn(4, 6, 3)
    mask = frame_mask([6, 1, 3, 0], 6)
    mask[2] = torch.tensor([True, False, True, False, True, False])  # not a prefix
    out = masked_mean(x, mask)
    assert out.shape == (4, 3)
    for i in range(4):
        rows = [x[i, j] for j in range(6) if mask[i, j]]
        expected = sum(rows) / len(rows) if rows else torch.zeros(3)  # documented: an all-masked row gives 0
        torch.testing.assert_close(out[i], expected)


def test_masked_mean_ignores_the_padded_values():
    x = torch.randn(2, 5, 4)
    mask = frame_mask([2, 4], 5)
    y = x.clone()
    y[~mask] = 1e4
    torch.testing.assert_close(masked_mean(x, mask), masked_mean(y, mask))


def test_masked_mean_accepts_a_float_mask():
    x = torch.randn(3, 4, 2)
    mask = frame_mask([1, 2, 4], 4)
    torch.testing.assert_close(masked_mean(x, mask.float()), masked_mean(x, mask))


def test_l2_normalize_is_x_over_its_norm():
    x = torch.randn(3, 5, 7) * 10
    out = l2_normalize(x)
    for idx in [(0, 0), (1, 4), (2, 2)]:
        v = x[idx]
        norm = math.sqrt(sum(e * e for e in v.tolist()))
        torch.testing.assert_close(out[idx], v / norm)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3, 5))


def test_l2_normalize_is_over_the_last_axis_only():
    x = torch.randn(4, 3)
    x[1] *= 100  # rows with different norms: normalising over the wrong axis would not give unit rows
    torch.testing.assert_close(l2_normalize(x).norm(dim=-1), torch.ones(4))


def test_l2_normalize_keeps_a_zero_vector_zero():
    x = torch.randn(3, 4)
    x[1] = 0
    out = l2_normalize(x)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros(4))
    torch.testing.assert_close(out[0], x[0] / x[0].norm())


# ---------------------------------------------------------------------------------------------- blocks


@pytest.mark.parametrize("dim", [64, 128], ids=["1-head", "2-heads"])
def test_block_equals_hugging_face_clip_encoder_layer(dim):
    eps = 1e-5
    block = TemporalBlock(dim, dim // 64, eps).eval()
    randomize(block)
    layer = hf_layer(block, dim, dim // 64, eps)
    x = torch.randn(3, 5, dim)
    mask = frame_mask([5, 2, 3], 5)
    key_bias = ((~mask).float() * MASK_VALUE)[:, None, None, :]
    with torch.no_grad():
        got = block(x, key_bias)
        expected = layer(x, hf_additive_mask(mask))
        expected = expected[0] if isinstance(expected, tuple) else expected
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_heads_follow_the_openai_rule():
    assert TemporalTransformer(64, 1).blocks[0].self_attn.heads == 1
    assert TemporalTransformer(128, 1).blocks[0].self_attn.heads == 2
    assert TemporalTransformer(32, 1).blocks[0].self_attn.heads == 1  # at least one head


def test_init_is_normal_002_with_zero_biases_and_layer_norm_identity():
    torch.manual_seed(0)
    model = TemporalTransformer(128, 4)
    linear = model.blocks[2].mlp.fc1.weight
    assert abs(linear.std().item() - 0.02) < 0.002 and abs(linear.mean().item()) < 0.002
    assert abs(model.frame_position.weight.std().item() - 0.02) < 0.002
    assert torch.equal(model.blocks[1].self_attn.q_proj.bias, torch.zeros(128))
    assert torch.equal(model.blocks[0].layer_norm1.weight, torch.ones(128))
    assert torch.equal(model.blocks[0].layer_norm2.bias, torch.zeros(128))
    assert model.blocks[0].layer_norm1.eps == 1e-12  # documented reference default


def test_constructor_arguments():
    model = TemporalTransformer(64, num_layers=3, max_positions=12, layer_norm_eps=1e-7)
    assert len(model.blocks) == 3
    assert model.frame_position.weight.shape == (12, 64)
    assert all(b.layer_norm1.eps == 1e-7 and b.layer_norm2.eps == 1e-7 for b in model.blocks)


# ---------------------------------------------------------------------------------------------- transformer


def transcribed(model: TemporalTransformer, x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Y = Blocks(X + P) + X with the blocks run by Hugging Face CLIPEncoderLayer."""
    eps = model.blocks[0].layer_norm1.eps if len(model.blocks) else 1e-12
    h = x + model.frame_position.weight[: x.shape[1]][None]
    for block in model.blocks:
        out = hf_layer(block, dim, max(1, dim // 64), eps)(h, hf_additive_mask(mask))
        h = out[0] if isinstance(out, tuple) else out
    return h + x


@pytest.mark.parametrize("dim,layers", [(64, 1), (128, 2)])
def test_transformer_is_blocks_of_x_plus_positions_plus_x(dim, layers):
    model = TemporalTransformer(dim, layers, max_positions=9, layer_norm_eps=1e-5).eval()
    randomize(model)
    x = torch.randn(3, 6, dim)
    mask = frame_mask([6, 2, 4], 6)
    with torch.no_grad():
        got = model(x, mask)
        expected = transcribed(model, x, mask, dim)
    assert got.shape == (3, 6, dim)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_residual_adds_the_raw_frames_not_the_positions():
    # Blocks that are the identity (zero attention and MLP outputs) leave Y = (X + P) + X: the residual adds the
    # raw frames, the position table enters the blocks only (reference seqTransf).
    model = TemporalTransformer(64, num_layers=2, max_positions=5)
    randomize(model, 1.0)
    with torch.no_grad():
        for block in model.blocks:
            for linear in (block.self_attn.out_proj, block.mlp.fc2):
                linear.weight.zero_()
                linear.bias.zero_()
    x = torch.randn(2, 4, 64)
    out = model(x, frame_mask([4, 2], 4))
    torch.testing.assert_close(out, 2 * x + model.frame_position.weight[:4][None])


def test_zero_layers_follow_the_formula():
    # Y = Blocks(X + P) + X with no blocks.
    model = TemporalTransformer(8, num_layers=0, max_positions=5)
    randomize(model, 1.0)
    x = torch.randn(2, 4, 8)
    out = model(x, frame_mask([4, 2], 4))
    torch.testing.assert_close(out, 2 * x + model.frame_position.weight[:4][None])


def test_zero_layers_leave_the_residual_sum_not_mean_pooling():
    """As documented: without blocks the output is 2X + P (test_zero_layers_follow_the_formula), so pooling it
    is not CLIP4Clip's meanP."""
    model = TemporalTransformer(8, num_layers=0, max_positions=5)
    randomize(model, 1.0)
    x = torch.randn(2, 4, 8)
    mask = frame_mask([4, 2], 4)
    out = model(x, mask)
    pooled = l2_normalize(masked_mean(l2_normalize(out), mask))  # as XCLIP.encode_video pools
    mean_p = l2_normalize(masked_mean(l2_normalize(x), mask))  # CLIP4Clip meanP
    assert not torch.allclose(pooled, mean_p, atol=1e-3)


def test_positions_are_per_frame_slot():
    # Swapping two frames' contents is not a plain permutation of the output: each slot has its own position.
    model = TemporalTransformer(64, 1).eval()
    randomize(model)
    x = torch.randn(1, 3, 64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        out = model(x, mask)
        swapped = model(x[:, [1, 0, 2]], mask)
    assert not torch.allclose(out[:, [1, 0, 2]], swapped, atol=1e-4)
    # Without positions the blocks are permutation-equivariant: the position table is what breaks it.
    with torch.no_grad():
        model.frame_position.weight.zero_()
        out = model(x, mask)
        swapped = model(x[:, [1, 0, 2]], mask)
    torch.testing.assert_close(out[:, [1, 0, 2]], swapped, rtol=1e-5, atol=1e-5)


def test_valid_frames_do_not_depend_on_padded_frames():
    model = TemporalTransformer(128, 2).eval()
    randomize(model)
    mask = frame_mask([5, 2, 1], 6)
    x = torch.randn(3, 6, 128)
    y = x.clone()
    y[~mask] = torch.randn(int((~mask).sum()), 128) * 50
    with torch.no_grad():
        out_x, out_y = model(x, mask), model(y, mask)
    torch.testing.assert_close(out_x[mask], out_y[mask], rtol=1e-5, atol=1e-5)
    # ... and so the pooled video embedding does not either.
    torch.testing.assert_close(masked_mean(l2_normalize(out_x), mask), masked_mean(l2_normalize(out_y), mask),
                               rtol=1e-5, atol=1e-6)
    # Without the mask, the same padded contents would change the valid frames (the test can fail).
    with torch.no_grad():
        full = torch.ones_like(mask)
        assert not torch.allclose(model(x, full)[mask], model(y, full)[mask], atol=1e-3)


def test_videos_in_a_batch_are_independent():
    model = TemporalTransformer(64, 2).eval()
    randomize(model)
    x = torch.randn(3, 4, 64)
    mask = frame_mask([4, 3, 1], 4)
    with torch.no_grad():
        batch = model(x, mask)
        single = torch.cat([model(x[i : i + 1], mask[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)


def test_too_many_frames_raise():
    model = TemporalTransformer(64, 1, max_positions=4)
    model(torch.randn(1, 4, 64), torch.ones(1, 4, dtype=torch.bool))  # exactly the table size is fine
    with pytest.raises(ValueError, match="5 frames exceed the 4 frame positions"):
        model(torch.randn(1, 5, 64), torch.ones(1, 5, dtype=torch.bool))


def test_gradients_reach_positions_blocks_and_inputs():
    model = TemporalTransformer(64, 1)
    x = torch.randn(2, 3, 64, requires_grad=True)
    mask = frame_mask([3, 2], 3)
    masked_mean(model(x, mask), mask).sum().backward()
    assert x.grad is not None and x.grad[mask].abs().sum() > 0
    assert model.frame_position.weight.grad[:3].abs().sum() > 0
    assert torch.equal(model.frame_position.weight.grad[3:], torch.zeros_like(model.frame_position.weight.grad[3:]))
    assert model.blocks[0].self_attn.q_proj.weight.grad.abs().sum() > 0
