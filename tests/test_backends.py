"""The registry of similarity backends: every backend equals the per-pair loops and the torch reference,
and ``select_backend`` maps auto | torch | fused to a backend by name, device, dtype and grad mode."""
import math

import pytest
import torch
from helpers_cpu_kernel import cpu_kernel_module  # noqa: F401  (fixture)
from helpers_model import random_features
from test_similarity import make_head, naive_pair

from xclip_pl.model.similarity import SIMILARITY_BACKENDS, SimilarityBackend, select_backend, tiled_logits

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _device_for(name: str, request) -> torch.device:
    """Where backend ``name`` runs in this test session (Triton: its interpreter on CPU without a GPU)."""
    if name == "cpu":
        request.getfixturevalue("cpu_kernel_module")
    if name == "triton":
        pytest.importorskip("triton")
        return CUDA if torch.cuda.is_available() else CPU
    return CPU


@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize("name", sorted(SIMILARITY_BACKENDS))
def test_every_backend_equals_the_loops_and_the_torch_reference(name, mask_padding, request):
    device = _device_for(name, request)
    a, b, words, frames = 4, 19, 6, 5
    head = make_head(words, frames, 16, mask_padding, tau=0.05)
    text, video = (x.to(torch.float64) for x in random_features(a, b, words, frames, 16))
    want = torch.empty(a, b, dtype=torch.float64)
    for i in range(a):
        for j in range(b):
            wm = text.word_mask[i] if mask_padding else torch.ones(words, dtype=torch.bool)
            fm = video.frame_mask[j] if mask_padding else torch.ones(frames, dtype=torch.bool)
            want[i, j] = 20.0 * naive_pair(head, text.sentence_emb[i], text.word_emb[i], video.video_emb[j],
                                           video.frame_emb[j], wm, fm, 0.05)
    head = head.float().to(device)
    text, video = (x.to(device=device, dtype=torch.float32) for x in (text, video))
    scale = torch.tensor(math.log(20.0), device=device)
    with torch.no_grad():
        reference = tiled_logits(head, text, video, scale, 3, 7, SIMILARITY_BACKENDS["torch"])
        got = tiled_logits(head, text, video, scale, 3, 7, SIMILARITY_BACKENDS[name])
    assert got.dtype == torch.float32 and got.shape == (a, b)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.cpu().double(), want, rtol=1e-5, atol=1e-5)


def test_registry_names_and_properties():
    assert set(SIMILARITY_BACKENDS) == {"torch", "cpu", "triton"}
    assert all(backend.name == name for name, backend in SIMILARITY_BACKENDS.items())
    assert [n for n, backend in SIMILARITY_BACKENDS.items() if backend.differentiable] == ["torch"]
    assert SIMILARITY_BACKENDS["triton"].frame_layout == "videos_first"
    with pytest.raises(NotImplementedError):
        SimilarityBackend().block_logits(None, None, None, None, torch.tensor(0.0), 0.01, True)


@pytest.mark.parametrize("kernel,device,dtype,needs_grad,expected", [
    ("torch", CPU, torch.float32, False, "torch"),
    ("torch", CUDA, torch.bfloat16, False, "torch"),
    ("auto", CPU, torch.float32, True, "torch"),  # gradients: only torch has them
    ("auto", CPU, torch.float64, False, "torch"),  # the kernels take fp32 / half features
    ("auto", CUDA, torch.bfloat16, False, "torch"),  # Triton is not timed on a GPU yet: auto keeps torch
    ("auto", CPU, torch.float32, False, "cpu"),
    ("auto", CPU, torch.bfloat16, False, "cpu"),
    ("fused", CPU, torch.float16, False, "cpu"),
    ("fused", CUDA, torch.bfloat16, False, "triton"),
])
def test_select_backend_by_name_and_device(kernel, device, dtype, needs_grad, expected, request):
    if expected != "torch":
        _device_for(expected, request)
    assert select_backend(kernel, device, dtype, needs_grad) is SIMILARITY_BACKENDS[expected]


@pytest.mark.parametrize("kernel,device,dtype,needs_grad,error", [
    ("cuda", CPU, torch.float32, False, "kernel must be"),
    ("fused", CPU, torch.float32, True, "no_grad"),
    ("fused", torch.device("meta"), torch.float32, False, "CPU or CUDA"),
    ("fused", CPU, torch.float64, False, "float64"),
])
def test_select_backend_errors(kernel, device, dtype, needs_grad, error):
    with pytest.raises(ValueError, match=error):
        select_backend(kernel, device, dtype, needs_grad)


def test_an_unavailable_backend_falls_back_under_auto_and_fails_under_fused(monkeypatch):
    class Unbuildable(SimilarityBackend):
        name = "cpu"

        def unavailable_reason(self):
            return "kernel='fused': no compiler here"

    monkeypatch.setitem(SIMILARITY_BACKENDS, "cpu", Unbuildable())
    assert select_backend("auto", CPU, torch.float32, False) is SIMILARITY_BACKENDS["torch"]
    with pytest.raises(RuntimeError, match="no compiler here"):
        select_backend("fused", CPU, torch.float32, False)
