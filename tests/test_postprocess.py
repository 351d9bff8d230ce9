"""Test-time re-scoring: hand-checked small cases and the invariants each method promises."""
import math

import pytest
import torch

from xclip_pl.evaluate.rescoring import dual_softmax, qb_norm, sinkhorn


def test_dual_softmax_2x2_by_hand():
    sim = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    e = math.e
    want = torch.tensor([[e / (e + 1), 0.0], [0.0, e / (e + 1)]])  # column softmax of [1, 0] is [e, 1] / (e + 1)
    torch.testing.assert_close(dual_softmax(sim, temperature=1.0), want)


def test_dual_softmax_demotes_a_hub():
    # both queries prefer video 0; query 0 prefers it more, so query 1 should move to video 1
    sim = torch.tensor([[10.0, 0.0], [9.0, 8.0]])
    out = dual_softmax(sim, temperature=1.0)
    col0 = torch.softmax(torch.tensor([10.0, 9.0]), 0)
    col1 = torch.softmax(torch.tensor([0.0, 8.0]), 0)
    torch.testing.assert_close(out, torch.stack([sim[:, 0] * col0, sim[:, 1] * col1], 1))
    assert sim[1].argmax() == 0 and out[1].argmax() == 1
    assert out[0].argmax() == 0


def test_sinkhorn_doubly_stochastic():
    torch.manual_seed(0)
    sim = 3.0 * torch.randn(6, 6)
    p = sinkhorn(sim, temperature=1.0, iterations=300)
    assert p.shape == sim.shape and torch.isfinite(p).all()
    torch.testing.assert_close(p.sum(1), torch.ones(6), rtol=0, atol=1e-5)
    torch.testing.assert_close(p.sum(0), torch.ones(6), rtol=0, atol=1e-4)


def test_sinkhorn_balanced_matrix_is_a_row_softmax():
    a, b = 2.0, 0.5
    sim = torch.tensor([[a, b], [b, a]])  # already balanced: one row normalisation is the answer
    torch.testing.assert_close(sinkhorn(sim, temperature=1.0, iterations=3), torch.softmax(sim, dim=1))
    huge = 1000.0 * sim  # exp(huge) overflows: the log domain does not
    torch.testing.assert_close(sinkhorn(huge, temperature=1.0, iterations=3), torch.softmax(huge, dim=1))


def test_sinkhorn_rectangular_marginals():
    torch.manual_seed(1)
    p = sinkhorn(torch.randn(6, 3), temperature=0.5, iterations=200)
    torch.testing.assert_close(p.sum(1), torch.ones(6), rtol=0, atol=1e-5)
    torch.testing.assert_close(p.sum(0), torch.full((3,), 2.0), rtol=0, atol=1e-4)  # queries / gallery


def test_qb_norm_leaves_rows_unchanged_when_the_bank_never_hits():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.1]])  # top-1: gallery 0 and 1
    bank = torch.tensor([[0.0, 0.1, 0.9], [0.1, 0.0, 0.7]])  # the bank only retrieves gallery 2
    torch.testing.assert_close(qb_norm(sim, bank, k=1, beta=20.0), sim)


def test_qb_norm_normalises_rows_whose_top1_is_activated():
    sim = torch.tensor([[0.9, 0.8, 0.0], [0.2, 0.8, 0.1]])
    bank = torch.tensor([[0.95, 0.1, 0.0], [0.9, 0.2, 0.1]])  # gallery 0 is a hub of the bank
    beta = 10.0
    out = qb_norm(sim, bank, k=1, beta=beta)
    # row 0 (top-1 = gallery 0, activated): inverted softmax exp(beta s) / sum_bank exp(beta bank), kept as a log / beta
    inverted = torch.exp(beta * sim[0]) / torch.exp(beta * bank).sum(0)
    torch.testing.assert_close(out[0], torch.log(inverted) / beta)
    assert out[0].argmax() == 1  # the hub is demoted below gallery 1
    torch.testing.assert_close(out[1], sim[1])  # row 1's top-1 (gallery 1) is not activated
    # a larger k activates gallery 1 too (second choice of both bank queries)
    assert not torch.equal(qb_norm(sim, bank, k=2, beta=beta)[1], sim[1])


@pytest.mark.parametrize("fn", [lambda s: dual_softmax(s, 0.5), lambda s: sinkhorn(s, 0.5, 20),
                                lambda s: qb_norm(s, torch.randn(7, s.shape[1]) * 30, k=2, beta=0.2)])
def test_shapes_finite_and_half_inputs(fn):
    sim = torch.randn(5, 4) * 30  # logit-scale values
    out = fn(sim)
    assert out.shape == sim.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    out_half = fn(sim.to(torch.bfloat16))
    assert out_half.dtype == torch.float32 and torch.isfinite(out_half).all()


def test_non_finite_input_is_a_clear_error():
    sim = torch.tensor([[0.0, float("nan")], [1.0, 0.0]])
    with pytest.raises(ValueError, match="non-finite"):
        dual_softmax(sim)
    with pytest.raises(ValueError, match="gallery columns"):
        qb_norm(torch.zeros(2, 3), torch.zeros(4, 2))
