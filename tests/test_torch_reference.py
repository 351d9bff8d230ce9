"""The torch backend's AOSM against the readable formula, and its compile wrapper's recompile limit."""
import pytest
import torch

from xclip_pl.model.similarity import attention_over_scores
from xclip_pl.model.similarity.backends.torch_reference import aosm, with_recompile_limit


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_aosm_equals_attention_over_scores(fast, masked):
    """``aosm`` takes scores already divided by tau and mixes the scores (``W s``) instead of the weights
    (``p W``): the same sum, ``tau`` times smaller."""
    tau = 0.05
    scores = torch.randn(3, 7, 4, dtype=torch.float64)  # reduced over axis 1
    mix = torch.eye(7, dtype=torch.float64) + 0.3 * torch.randn(7, 7, dtype=torch.float64)
    keep = torch.rand(3, 7, 1) > 0.3 if masked else None
    if keep is not None:
        keep[:, 0] = True
    want = attention_over_scores(scores.transpose(1, 2), mix, tau, None if keep is None else keep.transpose(1, 2))
    got = aosm(scores / tau, mix, 1, keep, fast)
    torch.testing.assert_close(got * tau, want, rtol=1e-12, atol=1e-12)


def test_recompile_limit_applies_to_the_wrapped_calls_only():
    """Ten static shapes: dynamo's default limit (8) would run the last two eagerly; the wrapper keeps
    them compiled, and the process's configuration is left as it was."""
    import torch._dynamo.config as dynamo_config
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    before = dynamo_config.recompile_limit
    counter = CompileCounter()

    def double(x):
        return x * 2

    run = with_recompile_limit(torch.compile(double, backend=counter, dynamic=False), limit=max(16, before + 2))
    for n in range(1, before + 3):
        assert torch.equal(run(torch.ones(n)), torch.full((n,), 2.0))
    assert counter.frame_count == before + 2
    assert dynamo_config.recompile_limit == before
    torch._dynamo.reset()
