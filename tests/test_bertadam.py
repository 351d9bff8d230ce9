"""BertAdam, the reference's optimiser (switch ``model.optimizer``, xclip-method.md 5.2): the CLIP4Clip rule by hand,
no bias correction, state in the parameter dtype; and as the optimizer class a recipe names."""
import math
from functools import partial

import pytest
import torch
from helpers_model import make_module
from torch import nn

from xclip_pl.train.bertadam import BertAdam


# ------------------------------------------------------------------------------------------- BertAdam
def reference_update(p, m, v, g, lr, wd, b1=0.9, b2=0.98, eps=1e-6, max_norm=1.0):
    """The CLIP4Clip BertAdam rule in plain tensor ops (per-tensor clip, no bias correction, decoupled decay)."""
    coef = max_norm / (g.norm() + 1e-6)
    g = g * coef if coef < 1 else g
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    update = m / (v.sqrt() + eps) + wd * p
    return p - lr * update, m, v


@pytest.mark.parametrize("steps", [1, 5])
def test_bertadam_equals_the_reference_rule(steps):
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(2, 2))]
    groups = [{"params": params[:2], "lr": 0.01, "weight_decay": 0.2}, {"params": params[2:], "lr": 0.03, "weight_decay": 0.0}]
    hyper = [(0.01, 0.2), (0.01, 0.2), (0.03, 0.0)]
    opt = BertAdam(groups)
    expected = [(p.detach().clone(), torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    for t in range(steps):
        grads = [torch.randn_like(p) * (3.0 if i == 0 else 0.1) * (t + 1) for i, p in enumerate(params)]  # clipped / not
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        expected = [reference_update(*state, g, *h) for state, g, h in zip(expected, grads, hyper)]
    for p, (ref_p, ref_m, ref_v) in zip(params, expected):
        torch.testing.assert_close(p.detach(), ref_p, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(opt.state[p]["next_m"], ref_m, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(opt.state[p]["next_v"], ref_v, rtol=1e-6, atol=1e-9)
        assert opt.state[p]["step"] == steps


def test_bertadam_first_step_has_no_bias_correction_and_skips_missing_grads():
    p, frozen = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.ones(2))
    opt = BertAdam([p, frozen], lr=0.1, weight_decay=0.0)
    p.grad = torch.tensor([0.5, -0.2, 0.01])
    opt.step()
    # m = 0.1 g, v = 0.02 g^2: the step is lr * 0.1 / sqrt(0.02) = lr * 0.7071 per element (AdamW: lr * 1)
    g = torch.tensor([0.5, -0.2, 0.01])
    torch.testing.assert_close(p.detach(), -0.1 * 0.1 * g / (math.sqrt(0.02) * g.abs() + 1e-6), rtol=1e-5, atol=1e-7)
    assert p.detach().abs().max() == pytest.approx(0.1 / math.sqrt(0.02) * 0.1, rel=1e-4)
    assert torch.equal(frozen.detach(), torch.ones(2)) and frozen not in opt.state


def test_bertadam_state_follows_the_parameter_dtype_and_closure():
    torch.manual_seed(0)
    half, full = nn.Parameter(torch.randn(8, 4).half()), nn.Parameter(torch.randn(4))
    opt = BertAdam([half, full], lr=1e-3)

    def closure():
        opt.zero_grad()
        loss = (half.float().sum(0) * full).square().sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.is_tensor(loss) and loss.ndim == 0 and loss.item() > 0  # the closure's loss is returned
    assert half.dtype == opt.state[half]["next_m"].dtype == opt.state[half]["next_v"].dtype == torch.float16
    assert opt.state[full]["next_m"].dtype == torch.float32
    assert half.isfinite().all()
    restored = BertAdam([half, full], lr=1e-3)
    restored.load_state_dict(opt.state_dict())
    assert restored.state[half]["next_v"].dtype == torch.float16 and restored.state[half]["step"] == 1


def test_bertadam_is_the_optimizer_class_the_module_calls_with_its_groups():
    module = make_module(clip="tiny", max_words=8, max_frames=3, temporal_layers=1, lr=1e-3, backbone_lr_scale=0.1,
                         weight_decay=0.2, no_decay="bias", scheduler=None,
                         optimizer=partial(BertAdam, betas=(0.9, 0.98), eps=1e-6, max_grad_norm=1.0))
    optimizer = module.configure_optimizers()
    assert type(optimizer) is BertAdam
    assert {g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups} == {
        "backbone": (1e-3 * 0.1, 0.2), "backbone_no_decay": (1e-3 * 0.1, 0.0), "new": (1e-3, 0.2), "new_no_decay": (1e-3, 0.0)}
    assert all(g["betas"] == (0.9, 0.98) and g["eps"] == 1e-6 and g["max_grad_norm"] == 1.0 for g in optimizer.param_groups)
    assert module.hparams["optimizer"] == {"class_path": "xclip_pl.train.bertadam.BertAdam",
                                           "init_args": {"betas": (0.9, 0.98), "eps": 1e-6, "max_grad_norm": 1.0}}
