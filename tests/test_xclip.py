"""XCLIP's fidelity switches against independent computations: the reference transcription's encoders
(tests/reference_xclip.py) for the features, and per-pair loops (tests/test_similarity.py) for the scores.

- ``frame_features``: ``clip`` (reference: raw CLIP frames in the sentence-frame and frame-word terms) or
  ``temporal`` (the paper's Fig. 2: temporal-encoder outputs there);
- ``encode_padded_frames``: ``True`` (reference: padded slots are mean-colour images encoded by CLIP) or
  ``False`` (skipped, zero features);
- ``text_padding_mask``: ``False`` (reference: causal mask only) or ``True`` (pad keys masked too).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers_model import random_ids, random_video, randomize_matrices
from reference_xclip import ReferenceXCLIP
from test_similarity import naive_pair

from xclip_pl import XCLIP
from xclip_pl.model.official import xclip_to_official

WORDS, FRAMES, TAU = 12, 5, 0.01


def build(**switches) -> XCLIP:
    """A tiny X-CLIP with non-identity AOSM matrices and frame positions, in eval mode."""
    torch.manual_seed(1)
    model = XCLIP("tiny", max_words=WORDS, max_frames=FRAMES, **switches).eval()
    randomize_matrices(model)
    with torch.no_grad():
        model.temporal.frame_position.weight.add_(0.1 * torch.randn_like(model.temporal.frame_position.weight))
        model.logit_scale.fill_(3.0)
    return model


def inputs() -> tuple[torch.Tensor, ...]:
    """4 captions (lengths 5, 12, 8) and 3 videos (5, 2, 3 decoded frames; padded slots zero = mean colour)."""
    torch.manual_seed(2)
    ids, mask = random_ids(4, WORDS, lengths=[5, 12, 8])
    pixels, frame_mask = random_video(3, FRAMES, valid=[5, 2, 3])
    return ids, mask, pixels, frame_mask


def reference_frames(ref: ReferenceXCLIP, pixels: torch.Tensor, frame_mask: torch.Tensor,
                     encode_padded: bool = True) -> torch.Tensor:
    """Raw CLIP frame embeddings [b, f, d] of the reference; ``encode_padded=False``: padded slots zero."""
    b, f = frame_mask.shape
    raw = ref.clip.encode_image(pixels.reshape(b * f, *pixels.shape[2:])).view(b, f, -1)
    return raw if encode_padded else raw * frame_mask[..., None]


def reference_video(ref: ReferenceXCLIP, raw: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(video embedding [b, d], temporal-encoder output [b, f, d]) as the reference's ``_loose_similarity``."""
    b, f, _ = raw.shape
    x = raw + ref.frame_position_embeddings(torch.arange(f))[None]
    bias = ((1.0 - frame_mask.float()[:, None, :]) * -1000000.0).expand(-1, f, -1)
    contextual = ref.transformerClip(x.permute(1, 0, 2), bias).permute(1, 0, 2) + raw
    weights = frame_mask.float()[..., None]
    video = (F.normalize(contextual, dim=-1) * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    return F.normalize(video, dim=-1), contextual


def per_pair_logits(ref: ReferenceXCLIP, text: tuple[torch.Tensor, torch.Tensor], video: torch.Tensor, frames: torch.Tensor,
                    word_mask: torch.Tensor | None = None, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """logit_scale * the four X-CLIP terms, pair by pair (masks: positions left out of AOSM; None = none)."""
    sentence, words = (F.normalize(t, dim=-1) for t in text)
    frames = F.normalize(frames, dim=-1)
    out = torch.empty(len(sentence), len(video))
    for i in range(len(sentence)):
        for j in range(len(video)):
            wm = torch.ones(WORDS, dtype=torch.bool) if word_mask is None else word_mask[i].bool()
            fm = torch.ones(FRAMES, dtype=torch.bool) if frame_mask is None else frame_mask[j].bool()
            out[i, j] = naive_pair(ref, sentence[i], words[i], video[j], frames[j], wm, fm, TAU)
    return ref.clip.logit_scale.exp() * out


# ------------------------------------------------------------------------------------- frame_features
def test_frame_features_temporal_puts_temporal_outputs_in_the_fine_grained_terms():
    ids, mask, pixels, frame_mask = inputs()
    for switch, picks_contextual in (("clip", False), ("temporal", True)):
        model = build(frame_features=switch)
        ref = ReferenceXCLIP(xclip_to_official(model)).eval()
        with torch.no_grad():
            got = model(ids, mask, pixels, frame_mask)
            raw = reference_frames(ref, pixels, frame_mask)
            video, contextual = reference_video(ref, raw, frame_mask)
            want = per_pair_logits(ref, ref.clip.encode_text(ids), video, contextual if picks_contextual else raw)
            if switch == "clip":  # the construction above is the reference's own forward
                torch.testing.assert_close(want, ref(ids, pixels, frame_mask), rtol=1e-5, atol=1e-5)
                clip_logits = got
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=switch)
    assert (got - clip_logits).abs().max() > 1e-2  # the switch changes the scores


# ------------------------------------------------------------------------------------ padded frames
def test_encode_padded_frames_true_encodes_mean_colour_slots_like_the_reference():
    ids, mask, pixels, frame_mask = inputs()
    model = build()  # encode_padded_frames=True is the default
    ref = ReferenceXCLIP(xclip_to_official(model)).eval()
    with torch.no_grad():
        got = model.encode_frames(pixels, frame_mask)
        want = reference_frames(ref, pixels, frame_mask)
        mean_colour = ref.clip.encode_image(torch.zeros(1, *pixels.shape[2:]))[0]  # zero after normalisation
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    padded = ~frame_mask
    assert padded.sum() == 5 and (pixels[padded] == 0).all()
    torch.testing.assert_close(got[padded], mean_colour.expand(5, -1), rtol=1e-5, atol=1e-5)  # not zero features
    assert got[padded].norm(dim=-1).min() > 0.1


def test_encode_padded_frames_false_skips_padded_slots():
    ids, mask, pixels, frame_mask = inputs()
    model = build(encode_padded_frames=False, mask_padding=True)
    ref = ReferenceXCLIP(xclip_to_official(model)).eval()
    images_seen = []
    hook = model.towers.clip.vision_model.register_forward_pre_hook(
        lambda module, args, kwargs: images_seen.append(kwargs["pixel_values"].shape[0]), with_kwargs=True)
    try:
        with torch.no_grad():
            got = model.encode_frames(pixels, frame_mask)
            logits = model(ids, mask, pixels, frame_mask)
    finally:
        hook.remove()
    assert images_seen == [int(frame_mask.sum())] * 2  # CLIP ran on the 10 decoded frames only, in both calls
    with torch.no_grad():
        raw = reference_frames(ref, pixels, frame_mask, encode_padded=False)
        video, _ = reference_video(ref, raw, frame_mask)
        want = per_pair_logits(ref, ref.clip.encode_text(ids), video, raw, word_mask=mask, frame_mask=frame_mask)
    torch.testing.assert_close(got, raw, rtol=1e-5, atol=1e-5)
    assert (got[~frame_mask] == 0).all()
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------- text padding
def reference_text(ref: ReferenceXCLIP, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Projected token features [a, w, d] of the reference text tower; with ``mask`` the pad keys are also
    masked (added to the causal mask), which the reference does not do."""
    clip = ref.clip
    if mask is None:
        return clip.encode_text(ids)[1]
    a, length = ids.shape
    pad_keys = torch.zeros(a, 1, length).masked_fill(mask[:, None, :] == 0, float("-inf"))
    attn = clip.build_attention_mask(length)[None] + pad_keys  # [a, w, w]: causal + pad keys
    x = clip.token_embedding(ids) + clip.positional_embedding[:length]
    x = clip.transformer(x.permute(1, 0, 2), attn).permute(1, 0, 2)
    return clip.ln_final(x) @ clip.text_projection


def _other_pads_changed(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ids whose pad positions, except each row's last one, hold another token (id 7)."""
    changed = ids.clone()
    changed[:, :-1][mask[:, :-1] == 0] = 7
    return changed


@pytest.mark.parametrize("text_padding_mask", [False, True])
def test_text_padding_mask(text_padding_mask):
    """False: causal mask only (the reference); True: pad keys masked as well. The sentence embedding (at
    EOT) is the same either way; pad positions differ, and only with the mask do they ignore the other pads."""
    ids, mask, _, _ = inputs()
    model = build(text_padding_mask=text_padding_mask)
    ref = ReferenceXCLIP(xclip_to_official(model)).eval()
    with torch.no_grad():
        got = model.encode_text(ids, mask)
        want = F.normalize(reference_text(ref, ids, mask if text_padding_mask else None), dim=-1)
        causal_only = F.normalize(reference_text(ref, ids, None), dim=-1)
        last_pad = model.encode_text(_other_pads_changed(ids, mask), mask).word_emb[:, -1]
    torch.testing.assert_close(got.word_emb, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.sentence_emb, causal_only[torch.arange(4), ids.argmax(-1)], rtol=1e-5, atol=1e-5)
    padded_rows = mask[:, -1] == 0  # rows 0, 2, 3 end in pads
    pad_difference = (want - causal_only)[mask == 0].abs().max()
    assert (pad_difference > 1e-3) == text_padding_mask and (want - causal_only)[mask == 1].abs().max() < 1e-5
    moved = (last_pad[padded_rows] - got.word_emb[padded_rows, -1]).abs().max()
    assert (moved > 1e-3) != text_padding_mask  # the last pad sees the other pads only without the mask


# ------------------------------------------------------------------------------------ temporal encoder
def test_temporal_layer_norm_eps_is_the_references_1e_12():
    """Frame features of tiny variance (1e-6, where the epsilon matters) through the temporal encoder equal
    the reference's TF-style LayerNorm blocks (eps 1e-12); ``temporal_layer_norm_eps=1e-5`` does not."""
    torch.manual_seed(3)
    raw = 1e-3 * torch.randn(3, FRAMES, 64)
    frame_mask = torch.tensor([[True] * FRAMES, [True, True, False, False, False], [True] * 3 + [False] * 2])
    for eps, matches in ((1e-12, True), (1e-5, False)):
        model = build(temporal_layer_norm_eps=eps)
        with torch.no_grad():
            model.temporal.frame_position.weight.zero_()  # the blocks see the tiny features alone
            ref = ReferenceXCLIP(xclip_to_official(model)).eval()  # the reference's blocks always use 1e-12
            got = model.temporal(raw, frame_mask) - raw  # what the blocks add
            want = reference_video(ref, raw, frame_mask)[1] - raw
        close = torch.allclose(got, want, rtol=1e-4, atol=1e-7)
        assert close == matches, (eps, (got - want).abs().max())
    assert want.abs().max() > 1e-2  # the blocks' contribution is not negligible: the comparison has teeth


# ---------------------------------------------------------------------------------------- temporal_init
@pytest.mark.parametrize("temporal_init", ["clip_text", "random"])
def test_temporal_init(temporal_init):
    """``clip_text`` (reference): the temporal blocks are copies of CLIP text blocks 0..k-1 and the frame
    positions the text position table; ``random`` (the paper's reply): freshly initialised."""
    torch.manual_seed(4)
    model = XCLIP("tiny", max_words=WORDS, max_frames=FRAMES, temporal_layers=2, temporal_init=temporal_init)
    text = model.towers.clip.text_model
    pairs = {"frame_position": (model.temporal.frame_position.weight, text.embeddings.position_embedding.weight)}
    for k, (block, layer) in enumerate(zip(model.temporal.blocks, text.encoder.layers, strict=True)):
        theirs = dict(layer.named_parameters())
        pairs |= {f"{k}.{name}": (p, theirs[name]) for name, p in block.named_parameters()}
    assert len(pairs) == 1 + 2 * 16  # every tensor of both blocks (names as in HF CLIPEncoderLayer)
    copied = {name: torch.equal(ours, theirs) for name, (ours, theirs) in pairs.items()}
    if temporal_init == "clip_text":
        assert all(copied.values())
    else:  # random matrices differ (LayerNorms and biases start at 1 and 0 either way)
        random_init = [n for n in copied if n == "frame_position" or (n.endswith(".weight") and "layer_norm" not in n)]
        assert len(random_init) == 1 + 2 * 6 and not any(copied[n] for n in random_init)


# ------------------------------------------------------------------------------------------ constructor
def test_constructor_defaults_and_recorded_arguments():
    """null means the usual value (tiny CLIP, 4 temporal blocks copied from the text tower), and the arguments
    are recorded as given: the module's hyper-parameters and checkpoints rebuild the network from them."""
    torch.manual_seed(0)
    model = XCLIP(max_words=8, max_frames=3)
    assert model.towers.clip.config.text_config.hidden_size == 64 and len(model.temporal.blocks) == 4
    two = XCLIP(max_words=8, max_frames=3, temporal_layers=2)  # tiny has 2 text blocks to copy from (clip_text)
    assert torch.equal(two.temporal.frame_position.weight, two.towers.clip.text_model.embeddings.position_embedding.weight)
    assert model.init_args == {"clip": None, "max_words": 8, "max_frames": 3, "temporal_layers": None,
                               "temporal_layer_norm_eps": 1e-12, "temporal_init": None, "temperature": 0.01,
                               "mask_padding": False, "frame_features": "clip", "text_padding_mask": False,
                               "encode_padded_frames": True, "official_checkpoint": None, "clip_config": None,
                               "clip_dtype": "fp32", "freeze_layers": -1, "activation_checkpointing": False}
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())


def test_clip_dtype_fp16_casts_the_towers_after_the_temporal_copy_and_freeze_layers_freezes():
    """``clip_dtype: fp16`` (reference) casts the CLIP towers once the temporal encoder holds fp32 copies of
    the text blocks; ``freeze_layers: 0`` (reference) freezes the embedding stage only."""
    torch.manual_seed(0)
    model = XCLIP("tiny", max_words=8, max_frames=3, temporal_layers=1, clip_dtype="fp16", freeze_layers=0)
    text = model.towers.clip.text_model
    assert text.encoder.layers[0].mlp.fc1.weight.dtype == torch.float16 and model.clip_dtype == "fp16"
    assert model.temporal.blocks[0].mlp.fc1.weight.dtype == torch.float32
    torch.testing.assert_close(model.temporal.blocks[0].mlp.fc1.weight, text.encoder.layers[0].mlp.fc1.weight.float(),
                               rtol=1e-3, atol=1e-3)  # copied in fp32, then the tower was rounded to fp16
    frozen = {n for n, p in model.towers.clip.named_parameters() if not p.requires_grad}
    assert "text_model.embeddings.token_embedding.weight" in frozen and "vision_model.pre_layrnorm.weight" in frozen
    assert not any(n.startswith("text_model.encoder.layers.") for n in frozen)
    assert all(p.requires_grad for p in model.temporal.parameters())


def test_activation_checkpointing_recomputes_the_clip_layers_and_keeps_the_gradients():
    """``activation_checkpointing: true``: every CLIP encoder layer runs a second time in the backward pass (its
    activations were not kept), and loss and gradients equal those of the same weights without it."""
    from helpers_model import make_module  # noqa: PLC0415

    tiny = dict(clip="tiny", max_words=16, max_frames=3, temporal_layers=1)
    torch.manual_seed(0)
    plain = make_module(**tiny)
    checkpointed = make_module(**tiny, activation_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    ids, mask = random_ids(4, 16, lengths=[4, 8, 6])
    batch = {"input_ids": ids, "attention_mask": mask, "video_index": torch.arange(4),
             "frames": torch.randint(0, 256, (4, 3, 32, 32, 3), dtype=torch.uint8),
             "frame_mask": torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)}
    results = []
    for module in (plain, checkpointed):
        calls = {"vision": 0, "text": 0}
        clip = module.model.towers.clip
        for key, tower in (("vision", clip.vision_model), ("text", clip.text_model)):
            mlp = tower.encoder.layers[0].mlp  # counted inside the layer (the recompute runs no module hooks)
            mlp.forward = _counting(mlp.forward, calls, key)
        module.train()
        loss = module.training_step(batch, 0)
        forward_only = dict(calls)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, forward_only, dict(calls)))
    (loss0, grads0, fwd0, all0), (loss1, grads1, fwd1, all1) = results
    assert fwd0 == fwd1 == {"vision": 1, "text": 1}
    assert all0 == {"vision": 1, "text": 1} and all1 == {"vision": 2, "text": 2}  # recomputed in backward
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)
    assert grads1.keys() == grads0.keys() and grads0
    for name, grad in grads0.items():
        torch.testing.assert_close(grads1[name], grad, rtol=1e-6, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}")


def _counting(forward, calls: dict, key: str):
    def counted(*args, **kwargs):
        calls[key] += 1
        return forward(*args, **kwargs)
    return counted
