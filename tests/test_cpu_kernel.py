"""The fused CPU AOSM kernel against the torch implementation and against per-pair loops."""
import math

import pytest
import torch
from helpers_cpu_kernel import require_cpu_kernel
from helpers_model import random_features
from test_similarity import make_head, naive_pair

from xclip_pl.model.features import TextFeatures, VideoFeatures
from xclip_pl.model.similarity.backends import cpu_extension


@pytest.fixture(scope="module")
def kernel_module():
    """The built kernel; a build failure fails on CI or with a compiler, else skips (helpers_cpu_kernel)."""
    return require_cpu_kernel()


def _scaled(text: TextFeatures, video: VideoFeatures, factor: float) -> tuple[TextFeatures, VideoFeatures]:
    """Features with norms ``factor``: scores / tau spread over hundreds, far beyond exp's range."""
    return (TextFeatures(text.sentence_emb * factor, text.word_emb * factor, text.word_mask),
            VideoFeatures(video.video_emb * factor, video.frame_emb * factor, video.frame_mask))


@pytest.mark.parametrize("mask_padding", [False, True])
def test_fused_equals_per_pair_loops(kernel_module, mask_padding):
    a, b, words, frames, dim = 3, 19, 7, 4, 16  # 19 videos: one full 16-lane vector and a partial one
    head = make_head(words, frames, dim, mask_padding, tau=0.05)
    text, video = (x.to(torch.float64) for x in random_features(a, b, words, frames, dim))
    scale = torch.tensor(math.log(20.0))
    with torch.no_grad():
        got = head.float().blockwise(text.to(dtype=torch.float32), video.to(dtype=torch.float32), scale, a, b, kernel="fused")
    head.double()
    for i in range(a):
        for j in range(b):
            wm = text.word_mask[i] if mask_padding else torch.ones(words, dtype=torch.bool)
            fm = video.frame_mask[j] if mask_padding else torch.ones(frames, dtype=torch.bool)
            want = 20.0 * naive_pair(head, text.sentence_emb[i], text.word_emb[i], video.video_emb[j], video.frame_emb[j], wm, fm, 0.05)
            torch.testing.assert_close(got[i, j].double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 7])
@pytest.mark.parametrize("shape", [(9, 37, 7, 5), (40, 3, 5, 9)])  # W_loc on the video side, then on the text side
def test_fused_equals_torch_fp32(kernel_module, chunk, mask_padding, shape):
    a, b, words, frames = shape
    head = make_head(words, frames, 16, mask_padding, tau=0.05).float()
    text, video = random_features(a, b, words, frames, 16)
    scale = torch.tensor(math.log(20.0))
    with torch.no_grad():
        torch_whole = head.blockwise(text, video, scale, a, b, kernel="torch")
        fused = head.blockwise(text, video, scale, chunk, chunk + 2, kernel="fused")
        auto = head.blockwise(text, video, scale, chunk, chunk)  # "auto" = fused on CPU without grad
    torch.testing.assert_close(fused, torch_whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(auto, torch_whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mask_padding", [False, True])
def test_fused_half_precision_is_as_close_to_fp32_as_torch(kernel_module, dtype, mask_padding):
    """Half features: the kernel (fp32 mixing) is no further from the fp32 result than the torch path
    (half-precision mixing) plus one half-precision rounding of the logits."""
    head = make_head(7, 5, 32, mask_padding, tau=0.05).float()
    text, video = random_features(13, 21, 7, 5, 32)
    scale = torch.tensor(math.log(20.0))
    with torch.no_grad():
        exact = head.blockwise(text, video, scale, 13, 21, kernel="torch")
        half_text, half_video = text.to(dtype=dtype), video.to(dtype=dtype)
        fused = head.blockwise(half_text, half_video, scale, 4, 5, kernel="fused")
        torch_half = head.blockwise(half_text, half_video, scale, 4, 5, kernel="torch")
    assert fused.dtype == torch.float32
    eps = torch.finfo(dtype).eps * exact.abs().max()
    assert (fused - exact).abs().max() <= (torch_half - exact).abs().max() + eps


def test_far_apart_scores_take_the_exact_path(kernel_module):
    """Scores / tau spread over ~1000: one shared softmax shift per tile would underflow whole rows, so
    those rows are recomputed with their own maximum; results still equal the torch path."""
    head = make_head(6, 4, 16, mask_padding=True, tau=0.01).float()
    text, video = _scaled(*random_features(5, 23, 6, 4, 16), factor=3.0)
    scale = torch.tensor(0.0)
    with torch.no_grad():
        want = head.blockwise(text, video, scale, 5, 23, kernel="torch")
        got = head.blockwise(text, video, scale, 2, 23, kernel="fused")
    assert want.isfinite().all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)


def test_kernel_argument_errors(kernel_module):
    head = make_head(6, 4, 8, mask_padding=False).float()
    text, video = random_features(3, 4, 6, 4, 8)
    scale = torch.tensor(0.0)
    with pytest.raises(ValueError, match="kernel must be"):
        head.blockwise(text, video, scale, 2, 2, kernel="cuda")
    with pytest.raises(ValueError, match="no_grad"):
        head.blockwise(text, video, scale, 2, 2, kernel="fused")  # gradients enabled
    with torch.no_grad(), pytest.raises(ValueError, match="float64"):
        head.double().blockwise(text.to(dtype=torch.float64), video.to(dtype=torch.float64), scale, 2, 2, kernel="fused")


def test_auto_falls_back_to_torch_when_the_kernel_cannot_be_built(monkeypatch):
    def broken_build(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpu_extension, "_state", {})
    monkeypatch.setattr("torch.utils.cpp_extension.load", broken_build)
    assert cpu_extension.load() is None
    assert "Ninja is required" in cpu_extension.build_error()
    head = make_head(6, 4, 8, mask_padding=False).float()
    text, video = random_features(3, 4, 6, 4, 8)
    scale = torch.tensor(0.0)
    with torch.no_grad():
        assert head.backend_for(text.word_emb).name == "torch"
        torch.testing.assert_close(head.blockwise(text, video, scale, 2, 2), head.blockwise(text, video, scale, 2, 2, kernel="torch"))
        with pytest.raises(RuntimeError, match="could not be built.*Ninja is required"):
            head.blockwise(text, video, scale, 2, 2, kernel="fused")


def test_kernel_checks_its_inputs(kernel_module):
    scores = torch.randn(2, 3, 4, 5)
    with pytest.raises(RuntimeError, match=r"mixing matrix must be \[3, 3\]"):
        kernel_module.frame_word(scores, torch.eye(4), None, None, None, None, None)
    with pytest.raises(RuntimeError, match="frame_mask has shape"):
        kernel_module.frame_word(scores, None, None, None, None, None, torch.ones(5, 4, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="float64"):
        kernel_module.frame_word(scores.double(), None, None, None, None, None, None)


def test_a_stale_build_lock_is_removed_and_a_live_build_awaited(tmp_path, monkeypatch):
    """An interrupted build leaves torch's ``lock`` file behind, on which every later load would wait
    forever. A lock in a build directory unchanged for ``STALE_LOCK_S`` is removed at once; while a build is
    alive the load waits for its end (the builder removes its lock), and a build that dies during the wait
    (its directory stops changing) has its lock removed then."""
    import os
    import threading
    import time

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))

    def make_lock(name: str, age: float):
        lock = tmp_path / name / "lock"
        lock.parent.mkdir()
        lock.touch()
        os.utime(lock, (time.time() - age, time.time() - age))
        return lock

    stale = make_lock("stale", cpu_extension.STALE_LOCK_S + 60)
    cpu_extension._wait_for_build_lock("stale")
    assert not stale.exists()

    live = make_lock("live", 0)
    finished = threading.Timer(0.5, live.unlink)  # the builder ends and removes its own lock
    finished.start()
    started = time.monotonic()
    cpu_extension._wait_for_build_lock("live", poll_s=0.05)
    assert time.monotonic() - started >= 0.4 and not live.exists()
    finished.join()

    monkeypatch.setattr(cpu_extension, "STALE_LOCK_S", 0.5)
    dead = make_lock("dead", 0)  # a build that is killed now: nothing changes after this
    started = time.monotonic()
    cpu_extension._wait_for_build_lock("dead", poll_s=0.05)
    assert 0.4 <= time.monotonic() - started < 5 and not dead.exists()
