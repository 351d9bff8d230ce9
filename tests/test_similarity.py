"""The blockwise multi-grained similarity against an independent per-pair implementation."""
import math

import pytest
import torch
from helpers_cpu_kernel import cpu_kernel_module  # noqa: F401  (fixture)
from helpers_model import random_features

from xclip_pl.model.similarity import MultiGrainedSimilarity, attention_over_scores


def naive_aosm(scores, mix, tau, valid):
    """sum_i (softmax(s/tau) W)_i s_i with masked positions given zero weight before mixing and dropped from the sum."""
    weights = torch.zeros_like(scores)
    weights[valid] = torch.softmax(scores[valid] / tau, dim=0)
    mixed = weights @ mix
    return (mixed[valid] * scores[valid]).sum()


def naive_pair(head, t, w, v, f, wm, fm, tau):
    """One text x one video, loops only."""
    L, F = w.shape[0], f.shape[0]
    s_vs = t @ head.global_mat_weight @ v
    s_vw = naive_aosm(torch.stack([w[l] @ v for l in range(L)]), head.word_logit_weight, tau, wm)
    s_sf = naive_aosm(torch.stack([t @ f[k] for k in range(F)]), head.frame_logit_weight, tau, fm)
    M = torch.stack([torch.stack([w[l] @ head.local_mat_weight @ f[k] for k in range(F)]) for l in range(L)])  # [L, F]
    u = torch.stack([naive_aosm(M[:, k], head.word_mat_weight, tau, wm) for k in range(F)])
    z = torch.stack([naive_aosm(M[l, :], head.frame_mat_weight, tau, fm) for l in range(L)])
    s_fw = (naive_aosm(u, head.frame_mat_weight2, tau, fm) + naive_aosm(z, head.word_mat_weight2, tau, wm)) / 2
    return (s_vs + s_vw + s_sf + s_fw) / 4


def make_head(words, frames, dim, mask_padding, tau=0.01):
    head = MultiGrainedSimilarity(dim, words, frames, temperature=tau, mask_padding=mask_padding).double()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return head


@pytest.mark.parametrize("mask_padding", [False, True])
def test_blockwise_equals_naive_per_pair(mask_padding):
    a, b, words, frames, dim = 3, 5, 7, 4, 16  # texts != videos, words != frames
    head = make_head(words, frames, dim, mask_padding, tau=0.05)
    text, video = (x.to(torch.float64) for x in random_features(a, b, words, frames, dim))
    logit_scale = torch.tensor(math.log(20.0), dtype=torch.float64)
    got = head(text, video, logit_scale)
    assert got.shape == (a, b)
    for i in range(a):
        for j in range(b):
            wm = text.word_mask[i] if mask_padding else torch.ones(words, dtype=torch.bool)
            fm = video.frame_mask[j] if mask_padding else torch.ones(frames, dtype=torch.bool)
            want = 20.0 * naive_pair(head, text.sentence_emb[i], text.word_emb[i], video.video_emb[j], video.frame_emb[j], wm, fm, 0.05)
            torch.testing.assert_close(got[i, j], want, rtol=1e-10, atol=1e-10)


def test_masks_change_scores_only_when_enabled():
    text, video = random_features(3, 4, 6, 5, 8)
    plain, masked = MultiGrainedSimilarity(8, 6, 5), MultiGrainedSimilarity(8, 6, 5, mask_padding=True)
    scale = torch.tensor(0.0)
    full_text = type(text)(text.sentence_emb, text.word_emb, torch.ones_like(text.word_mask))
    torch.testing.assert_close(plain(text, video, scale), plain(full_text, video, scale))  # reference ignores masks
    assert not torch.allclose(masked(text, video, scale), plain(text, video, scale))


def test_permuting_videos_permutes_columns():
    head = make_head(6, 3, 8, mask_padding=True).float()
    text, video = random_features(4, 5, 6, 3, 8)
    perm = torch.tensor([3, 0, 4, 1, 2])
    scale = torch.tensor(1.0)
    torch.testing.assert_close(head(text, video[perm], scale), head(text, video, scale)[:, perm])


def test_aosm_identity_small_temperature_is_max_pooling():
    scores = torch.randn(4, 7, 9)
    pooled = attention_over_scores(scores, torch.eye(9), temperature=1e-4)
    torch.testing.assert_close(pooled, scores.max(-1).values, rtol=1e-4, atol=1e-4)
    mask = torch.rand(4, 7, 9) > 0.3
    mask[..., 0] = True
    masked = attention_over_scores(scores, torch.eye(9), temperature=1e-4, mask=mask)
    torch.testing.assert_close(masked, scores.masked_fill(~mask, -1e9).max(-1).values, rtol=1e-4, atol=1e-4)


def test_every_matrix_gets_a_gradient():
    head = MultiGrainedSimilarity(8, 6, 4, temperature=0.5)
    text, video = random_features(3, 3, 6, 4, 8)
    scale = torch.tensor(0.0, requires_grad=True)
    head(text, video, scale).logsumexp(1).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert scale.grad is not None


def test_shape_mismatch_is_a_clear_error():
    head = MultiGrainedSimilarity(8, 6, 4)
    text, video = random_features(2, 2, 5, 4, 8)
    with pytest.raises(ValueError, match="max_words=6.*5 words"):
        head(text, video, torch.tensor(0.0))


# --------------------------------------------------------------------------------------- blockwise engine
@pytest.mark.parametrize("kernel", ["torch", "auto"])  # auto: the fused C++ kernel on CPU (test_cpu_kernel.py)
@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunked_equals_unchunked(chunk, mask_padding, kernel, request):
    head = make_head(7, 4, 16, mask_padding, tau=0.05).float()
    text, video = random_features(9, 11, 7, 4, 16)
    scale = torch.tensor(math.log(20.0))
    with torch.no_grad():
        if kernel == "auto":  # the fused kernel must really run: a failed build fails or skips, never torch vs torch
            request.getfixturevalue("cpu_kernel_module")
            assert head.backend_for(text.word_emb, kernel).name == "cpu"
        whole = head.blockwise(text, video, scale, 9, 11, kernel="torch")
        chunked = head.blockwise(text, video, scale, chunk, chunk, kernel=kernel)
        uneven = head.blockwise(text, video, scale, chunk, chunk + 2, kernel=kernel)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(uneven, whole, rtol=1e-5, atol=1e-5)
    grad_path = head.blockwise(text, video, scale, chunk, chunk)  # autograd path, out of place
    torch.testing.assert_close(grad_path.detach(), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_model_similarity_chunked_in_bf16(chunk):
    from helpers_model import randomize_matrices

    from xclip_pl import XCLIP

    torch.manual_seed(2)
    model = XCLIP("tiny", max_words=7, max_frames=4).eval()
    randomize_matrices(model)
    text, video = random_features(9, 11, 7, 4, model.towers.embed_dim)
    with torch.no_grad():
        exact = model.similarity(text, video)
        text16, video16 = text.to(dtype=torch.bfloat16), video.to(dtype=torch.bfloat16)
        whole16 = model.similarity(text16, video16, chunk_size=100)
        chunked16 = model.similarity(text16, video16, chunk_size=chunk)
        assert torch.allclose(model.similarity(text, video, chunk_size=chunk), exact, rtol=1e-5, atol=1e-5)
    assert chunked16.dtype == torch.float32 and chunked16.shape == (9, 11)  # sums and logits in fp32
    torch.testing.assert_close(chunked16, whole16, rtol=1e-5, atol=1e-4)  # same bf16 maths, any tiling
    scale = model.logit_scale.exp().item()
    assert (chunked16 - exact).abs().max() < 0.02 * scale  # bf16 inputs: close to fp32


def test_gradients_flow_through_chunked_training_logits():
    head = make_head(6, 4, 8, mask_padding=True, tau=0.5).float()
    text, video = random_features(5, 5, 6, 4, 8)
    word = text.word_emb.clone().requires_grad_(True)
    text = type(text)(text.sentence_emb, word, text.word_mask)
    scale = torch.tensor(0.0, requires_grad=True)
    loss = head.blockwise(text, video, scale, 2, 3).logsumexp(1).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in head.named_parameters()}
    word_grad = word.grad.clone()
    head.zero_grad()
    word.grad = None
    head(text, video, scale).logsumexp(1).sum().backward()  # one block
    for n, p in head.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(word.grad, word_grad, rtol=1e-4, atol=1e-6)


def test_identity_mixing_shortcut_is_exact():
    head = make_head(6, 4, 8, mask_padding=False).float()
    with torch.no_grad():
        for p in (head.word_mat_weight, head.frame_mat_weight, head.frame_logit_weight):
            p.copy_(torch.eye(p.shape[0]))  # skipped without grad
    text, video = random_features(4, 5, 6, 4, 8)
    scale = torch.tensor(1.0)
    with torch.no_grad():
        fast = head(text, video, scale)
    torch.testing.assert_close(fast, head(text, video, scale).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_compiled_blocks_on_cuda_equal_eager():
    head = make_head(7, 4, 16, mask_padding=True, tau=0.05).float().cuda()
    text, video = (x.to("cuda") for x in random_features(9, 11, 7, 4, 16))
    scale = torch.tensor(math.log(20.0), device="cuda")
    with torch.no_grad():
        eager = head.blockwise(text, video, scale, 4, 4)
        compiled = head.blockwise(text, video, scale, 4, 4, compile=True)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
