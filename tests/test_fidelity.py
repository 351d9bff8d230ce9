"""The reference recipe pieces: freezing, pure fp16 towers, parameter groups, local-slice gather (BertAdam:
test_bertadam.py; the schedules: test_schedules.py)."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers_model import free_port, make_module, random_ids, random_video, seeded_case
from torch import nn
from transformers import CLIPModel

from xclip_pl import XCLIP
from xclip_pl.model.freezing import freeze_clip_layers
from xclip_pl.model.precision import FP32LayerNorm, cast_towers_fp16
from xclip_pl.model.presets import preset_config
from xclip_pl.train.distributed import (
    all_gather_local_grad,
    feature_gather,
    gather_features,
    gather_features_local_grad,
)
from xclip_pl.train.loss import contrastive_loss
from xclip_pl.train.optim import parameter_groups, reference_parameter_groups

EMBEDDING_STAGE = {
    "text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
    "vision_model.embeddings.class_embedding", "vision_model.embeddings.patch_embedding.weight",
    "vision_model.embeddings.position_embedding.weight", "vision_model.pre_layrnorm.weight", "vision_model.pre_layrnorm.bias",
}
TOP = {
    "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias", "text_projection.weight", "logit_scale",
    "vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias", "visual_projection.weight",
}


def tiny_clip() -> CLIPModel:
    torch.manual_seed(0)
    return CLIPModel(preset_config("tiny"))


# --------------------------------------------------------------------------------------------- freezing
def _layer_names(clip: CLIPModel, layer: int) -> set[str]:
    return {n for n, _ in clip.named_parameters() if f"encoder.layers.{layer}." in n}


@pytest.mark.parametrize("n", [0, 1, 2, -1])
def test_freezing_follows_the_reference_table(n):
    clip = tiny_clip()
    frozen = set(freeze_clip_layers(clip, n))
    expected = set() if n == -1 else EMBEDDING_STAGE.union(*(_layer_names(clip, i) for i in range(n)))
    assert frozen == expected
    assert {name for name, p in clip.named_parameters() if not p.requires_grad} == expected
    assert TOP.isdisjoint(frozen)
    if n == 2:  # every encoder layer of the 2-layer towers frozen: only the top trains
        assert {name for name, p in clip.named_parameters() if p.requires_grad} == TOP


def test_freezing_rejects_out_of_range_values():
    for bad in (-2, 3):
        with pytest.raises(ValueError, match=f"freeze_layers={bad}"):
            freeze_clip_layers(tiny_clip(), bad)


# ------------------------------------------------------------------------------------------ pure fp16
FP32_NAMES = ("layer_norm", "layernorm", "layrnorm", "embedding.weight", "class_embedding", "logit_scale")


def test_fp16_cast_pattern_and_finite_forward():
    reference, clip = tiny_clip(), tiny_clip()
    keys = set(clip.state_dict())
    cast_towers_fp16(clip)
    cast_towers_fp16(clip)  # idempotent: no second set of hooks
    assert set(clip.state_dict()) == keys
    for name, p in clip.named_parameters():
        fp32 = any(s in name for s in FP32_NAMES) and "patch_embedding" not in name
        assert p.dtype == (torch.float32 if fp32 else torch.float16), name
    norms = [m for m in clip.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * (2 * 2 + 1) + 1 and all(type(m) is FP32LayerNorm for m in norms)

    ids, _ = random_ids(3, 10, lengths=[4, 10, 7])
    pixels = torch.randn(2, 3, 32, 32)
    text = clip.text_model(input_ids=ids).last_hidden_state
    words = clip.text_projection(text)
    image = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)
    assert words.dtype == image.dtype == torch.float16 and words.isfinite().all() and image.isfinite().all()
    with torch.no_grad():
        ref_words = reference.text_projection(reference.text_model(input_ids=ids).last_hidden_state)
        ref_image = reference.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(words.float(), ref_words, rtol=0, atol=3e-2)
    torch.testing.assert_close(image.float(), ref_image, rtol=0, atol=3e-2)
    (words.float().square().sum() + image.float().square().sum()).backward()
    assert all(p.grad is not None and p.grad.dtype == p.dtype and p.grad.isfinite().all() for p in clip.parameters() if p.grad is not None)
    assert clip.text_model.encoder.layers[0].mlp.fc1.weight.grad.dtype == torch.float16


def test_layer_norm_is_computed_in_fp32_on_fp16_activations():
    clip = tiny_clip()
    cast_towers_fp16(clip)
    seen = []
    for module in (clip.text_model.encoder.layers[1].layer_norm1, clip.vision_model.pre_layrnorm, clip.vision_model.post_layernorm):
        module.register_forward_hook(lambda m, args, out: seen.append((m, args[0], out)))
    clip.text_model(input_ids=random_ids(2, 8, lengths=[5])[0])
    clip.vision_model(pixel_values=torch.randn(2, 3, 32, 32))
    assert len(seen) == 3
    for module, x, out in seen:
        assert x.dtype == out.dtype == torch.float16 and module.weight.dtype == torch.float32
        expected = F.layer_norm(x.float(), module.normalized_shape, module.weight, module.bias, module.eps).half()
        assert torch.equal(out, expected)


def test_xclip_runs_with_pure_fp16_towers():
    torch.manual_seed(0)
    model = XCLIP("tiny", max_words=8, max_frames=3)
    cast_towers_fp16(model.towers.clip)
    ids, mask = random_ids(3, 8, lengths=[4, 8])
    pixels, frame_mask = random_video(2, 3, valid=[3, 1])
    logits = model(ids, mask, pixels, frame_mask)
    assert logits.dtype == torch.float32 and logits.shape == (3, 2) and logits.isfinite().all()
    assert model.temporal.blocks[0].mlp.fc1.weight.dtype == torch.float32  # the head stays fp32


# ------------------------------------------------------------------------------------ parameter groups
def test_reference_groups_decay_layer_norms_and_logit_scale():
    torch.manual_seed(0)
    model = XCLIP("tiny", max_words=8, max_frames=3)
    frozen = freeze_clip_layers(model.towers.clip, 0)
    groups = reference_parameter_groups(model, model.towers, lr=1e-4, backbone_lr_scale=1e-3, weight_decay=0.2)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())

    def group(name):
        return by_param[id(named[name])]

    for name in ("towers.clip.logit_scale", "towers.clip.text_model.final_layer_norm.weight", "towers.clip.text_model.encoder.layers.0.layer_norm1.weight"):
        assert group(name)["name"] == "backbone" and group(name)["weight_decay"] == 0.2 and group(name)["lr"] == pytest.approx(1e-7)
    assert group("towers.clip.text_model.encoder.layers.0.self_attn.q_proj.bias")["name"] == "backbone_no_decay"
    assert group("towers.clip.text_model.encoder.layers.0.self_attn.q_proj.bias")["weight_decay"] == 0.0
    new_decayed = [n for n in named if n.startswith(("similarity_head.", "temporal.")) and "bias" not in n]
    assert new_decayed and all(group(n)["name"] == "new" and group(n)["lr"] == 1e-4 for n in new_decayed)
    assert all(group(n)["name"] == "new_no_decay" for n in named if n.startswith("temporal.") and "bias" in n)
    assert not any(f"towers.clip.{n}" in {k for k, p in named.items() if id(p) in by_param} for n in frozen)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    improved = {id(p): g for g in parameter_groups(model, model.towers, 1e-4, 1e-3, 0.2) for p in g["params"]}
    assert improved[id(named["towers.clip.logit_scale"])]["weight_decay"] == 0.0  # the contrast with the improved rule


# ---------------------------------------------------------------------------------------------- gather
WORDS, FRAMES, BATCH = 8, 3, 2  # per-rank batch; global batch 2 x 2


def _build():
    return seeded_case(WORDS, FRAMES, 2 * BATCH)


def _averaged_grads(model, batch, rank, gather):
    model.zero_grad(set_to_none=True)
    ids, mask, pixels, frame_mask = (t[rank * BATCH : (rank + 1) * BATCH] for t in batch)
    text, video = model.encode_text(ids, mask), model.encode_video(pixels, frame_mask)
    contrastive_loss(model.similarity, text, video, gather, rank, 2, local_loss=False).backward()
    grads = {}
    for name, p in model.named_parameters():  # DDP averages gradients over ranks
        g = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        dist.all_reduce(g)
        grads[name] = g / 2
    return grads


def _worker(rank, port, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model, batch = _build()
    result = {"sum": _averaged_grads(model, batch, rank, gather_features),
              "local_slice": _averaged_grads(model, batch, rank, gather_features_local_grad),
              "local_slice_as_4": _averaged_grads(model, batch, rank, feature_gather("local_slice", 4))}
    if rank == 0:
        torch.save(result, out_path)
    dist.destroy_process_group()


def test_local_slice_gather_scales_encoder_gradients_by_one_over_world(tmp_path):
    out = tmp_path / "grads.pt"
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    result = torch.load(out)
    after_gather = ("similarity_head.", "towers.clip.logit_scale")
    encoder = [n for n, g in result["sum"].items() if not n.startswith(after_gather) and g.abs().sum() > 0]
    head = [n for n in result["sum"] if n.startswith(after_gather)]
    assert len(encoder) > 50 and len(head) == 9
    for name in encoder:
        torch.testing.assert_close(result["local_slice"][name], result["sum"][name] / 2, rtol=1e-4, atol=1e-7, msg=name)
    for name in head:
        torch.testing.assert_close(result["local_slice"][name], result["sum"][name], rtol=1e-4, atol=1e-7, msg=name)
    # gather_grad_devices: 4 on these 2 processes: the encoders get 1/4 (the reference on 4 GPUs), the head all
    for name in encoder:
        torch.testing.assert_close(result["local_slice_as_4"][name], result["sum"][name] / 4, rtol=1e-4, atol=1e-7, msg=name)
    for name in head:
        torch.testing.assert_close(result["local_slice_as_4"][name], result["sum"][name], rtol=1e-4, atol=1e-7, msg=name)


def test_gather_grad_devices_in_one_process_scales_encoder_gradients():
    """One process standing in for the reference's 4 GPUs: encoder gradients are 1/4 of the exact ones,
    the parameters after the gather (AOSM matrices, logit scale) keep theirs; the loss is unchanged."""
    model, batch = _build()
    ids, mask, pixels, frame_mask = batch

    def grads(gather):
        model.zero_grad(set_to_none=True)
        text, video = model.encode_text(ids, mask), model.encode_video(pixels, frame_mask)
        loss = contrastive_loss(model.similarity, text, video, gather, 0, 1, local_loss=False)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    exact_loss, exact = grads(gather_features)
    scaled_loss, scaled = grads(feature_gather("local_slice", 4))
    torch.testing.assert_close(scaled_loss, exact_loss)
    after_gather = ("similarity_head.", "towers.clip.logit_scale")
    encoder = [n for n, g in exact.items() if not n.startswith(after_gather) and g.abs().sum() > 0]
    assert len(encoder) > 50
    for name, grad in exact.items():
        expected = grad if name.startswith(after_gather) else grad / 4
        torch.testing.assert_close(scaled[name], expected, rtol=1e-5, atol=1e-8, msg=name)


def test_gather_grad_devices_needs_local_slice():
    with pytest.raises(ValueError, match="gather_grad_devices=4 applies to model.gather_grad: local_slice"):
        make_module(clip="tiny", gather_grad_devices=4)


def test_local_gather_is_identity_in_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_local_grad(x) is x
    assert feature_gather("sum") is gather_features and feature_gather("local_slice") is gather_features_local_grad
    with pytest.raises(ValueError, match="gather_grad='mean'"):
        feature_gather("mean")
