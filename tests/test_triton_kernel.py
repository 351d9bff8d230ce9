"""The Triton AOSM kernels (the GPU fused path) against the torch implementation, run on CPU tensors in
Triton's interpreter (``TRITON_INTERPRET=1``); the same code compiles for CUDA (``kernel="fused"``)."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from helpers_model import random_features
from test_similarity import make_head

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def interpreted():
    """:mod:`xclip_pl.model.similarity.backends.triton_kernels`, its kernels run by Triton's interpreter on CPU tensors
    (conftest sets ``TRITON_INTERPRET=1`` on machines without a GPU, before triton is imported)."""
    if torch.cuda.is_available():
        pytest.skip("these tests run the kernels on CPU tensors in Triton's interpreter; GPU checks: benchmarks/")
    from xclip_pl.model.similarity.backends import triton_kernels

    return triton_kernels


def _run_triton(monkeypatch, module, head, text, video, scale, ta, tb):
    """The tiling loop with the ``triton`` backend chosen by name (``kernel="fused"`` picks it on CUDA
    only), its (interpreted) kernels run on CPU tensors."""
    from xclip_pl.model.similarity import SIMILARITY_BACKENDS, tiled_logits

    head.check_shapes(text, video)
    with torch.no_grad():
        return tiled_logits(head, text, video, scale, ta, tb, SIMILARITY_BACKENDS["triton"])


@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize("shape,local_on_video", [((9, 5, 7, 3), True), ((3, 19, 7, 5), False), ((2, 5, 40, 20), False)],
                         ids=["W_loc-on-frames", "W_loc-on-words", "long-axes"])  # long: 4 videos per level-1 program
def test_triton_equals_torch_fp32(interpreted, monkeypatch, mask_padding, shape, local_on_video):
    a, b, words, frames = shape
    assert (b * frames < a * words) == local_on_video  # blockwise puts W_loc on the side with fewer rows
    if words > 32:  # padded to 64 words x 32 frames: fewer than 16 videos per level-1 program
        assert interpreted.level1_config(words, frames, b)[2] < 16
    head = make_head(words, frames, 16, mask_padding, tau=0.05).float()
    text, video = random_features(a, b, words, frames, 16)
    scale = torch.tensor(math.log(20.0))
    with torch.no_grad():
        want = head.blockwise(text, video, scale, a, b, kernel="torch")
    for ta, tb in [(a, b), (2, 3)]:  # one block; uneven blocks
        got = _run_triton(monkeypatch, interpreted, head, text, video, scale, ta, tb)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_triton_identity_matrices_skip_the_mixes(interpreted, monkeypatch):
    """Fresh (identity) mixing matrices take the kernels' no-mix branches and give the same values."""
    from xclip_pl.model.similarity import MultiGrainedSimilarity

    head = MultiGrainedSimilarity(16, 6, 4, temperature=0.05, mask_padding=True)
    text, video = random_features(4, 9, 6, 4, 16)
    scale = torch.tensor(math.log(20.0))
    with torch.no_grad():
        want = head.blockwise(text, video, scale, 4, 9, kernel="torch")
    torch.testing.assert_close(_run_triton(monkeypatch, interpreted, head, text, video, scale, 4, 9), want,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_precision_is_as_close_to_fp32_as_torch(interpreted, monkeypatch, dtype):
    """Half features (fp16 tensor-core mixes of the fp32 weights) are no further from the fp32 result
    than the torch path's half-precision mixes, plus one half-precision rounding of the logits."""
    head = make_head(7, 5, 32, True, tau=0.05).float()
    text, video = random_features(6, 21, 7, 5, 32)
    scale = torch.tensor(math.log(20.0))
    with torch.no_grad():
        exact = head.blockwise(text, video, scale, 6, 21, kernel="torch")
        half_text, half_video = text.to(dtype=dtype), video.to(dtype=dtype)
        torch_half = head.blockwise(half_text, half_video, scale, 6, 21, kernel="torch")
    got = _run_triton(monkeypatch, interpreted, head, half_text, half_video, scale, 6, 21)
    assert got.dtype == torch.float32
    eps = torch.finfo(dtype).eps * exact.abs().max()
    assert (got - exact).abs().max() <= (torch_half - exact).abs().max() + eps


def test_triton_far_apart_scores(interpreted, monkeypatch):
    """Scores spread over hundreds in 1/tau units (exp underflows for all but the row maxima) still equal
    the torch path: every softmax is shifted by its own maximum."""
    head = make_head(5, 4, 16, True, tau=0.05).float()
    text, video = random_features(3, 6, 5, 4, 16)
    text = type(text)(text.sentence_emb * 30, text.word_emb * 30, text.word_mask)
    scale = torch.tensor(math.log(20.0))
    with torch.no_grad():
        want = head.blockwise(text, video, scale, 3, 6, kernel="torch")
    torch.testing.assert_close(_run_triton(monkeypatch, interpreted, head, text, video, scale, 3, 6), want,
                               rtol=1e-5, atol=1e-4)


def test_axis_aosm_checks_its_arguments(interpreted):
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="out must be float32"):
        interpreted.axis_aosm(torch.zeros(2, 3, dtype=torch.float64), x, None, None, 1.0, 1.0, True)
    with pytest.raises(ValueError, match="padded to"):
        interpreted.axis_aosm(torch.zeros(2, 3), x, torch.eye(5), None, 1.0, 1.0, True)
    with pytest.raises(ValueError, match="contiguous"):
        interpreted.frame_word_level1(torch.randn(2, 3, 4, 5).transpose(1, 2), None, None, None, None, True)


COMPILE_CASES = [(32, 12, "bfloat16"), (64, 64, "bfloat16"), (7, 5, "float32")]


@pytest.fixture(scope="module")
def compile_reports():
    """:func:`compile_for_gpu` for every case, in a subprocess without ``TRITON_INTERPRET`` (the
    compiler needs the real kernels, not the interpreter's)."""
    pytest.importorskip("triton.backends.nvidia")
    code = ("import json, sys, torch; from xclip_pl.model.similarity.backends.triton_kernels import compile_for_gpu; "
            "print(json.dumps([compile_for_gpu(w, f, 1000, getattr(torch, d), capability=90) "
            "for w, f, d in json.loads(sys.argv[1])]))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(COMPILE_CASES)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(COMPILE_CASES)), ids=[f"{w}x{f}-{d}" for w, f, d in COMPILE_CASES])
def test_kernels_compile_for_h100(compile_reports, case):
    """The interpreter does not check what the compiler checks (constexpr globals, dot shapes, layouts,
    registers): every kernel that these shapes launch compiles for sm_90 (H100/H200), no GPU needed."""
    report = compile_reports[case]
    assert any(name.startswith("level1") for name in report) and any(name.startswith("axis") for name in report)
    for name, usage in report.items():
        assert 0 < usage["registers"] <= 255, (name, usage)
        if COMPILE_CASES[case][2] != "float32":  # the half-precision configurations are the fast path: no spills
            assert usage["local"] == 0, (name, usage)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_triton_equals_torch_on_cuda(dtype):
    """On a GPU: kernel="fused" (the compiled Triton kernels) equals the fp32 torch path (fp32 features),
    or is no further from it than the torch path in the same half precision (plus one rounding)."""
    head = make_head(32, 12, 64, True, tau=0.01).float().cuda()
    text, video = (x.to(device="cuda") for x in random_features(37, 91, 32, 12, 64))
    scale = torch.tensor(math.log(100.0), device="cuda")
    with torch.no_grad():
        exact = head.blockwise(text, video, scale, 16, 40, kernel="torch")
        text, video = text.to(dtype=dtype), video.to(dtype=dtype)
        same_dtype = head.blockwise(text, video, scale, 16, 40, kernel="torch")
        got = head.blockwise(text, video, scale, 16, 40, kernel="fused")
    if dtype == torch.float32:
        torch.testing.assert_close(got, exact, rtol=1e-5, atol=1e-4)
    else:
        eps = torch.finfo(dtype).eps * exact.abs().max()
        assert (got - exact).abs().max() <= (same_dtype - exact).abs().max() + eps
