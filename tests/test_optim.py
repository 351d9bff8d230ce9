"""Parameter groups and the optimizer classes ``model.optimizer`` names: the module builds the groups of its
``no_decay`` policy with ``lr`` / ``lr * backbone_lr_scale`` and calls the optimizer class with them."""
from __future__ import annotations

from functools import partial

import pytest
import torch
from helpers_model import make_module

from xclip_pl.train.optim import AdamW, make_parameter_groups, parameter_groups, reference_parameter_groups


def _by_name(groups: list[dict]) -> dict[str, tuple]:
    return {g["name"]: (g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in groups}


@pytest.mark.parametrize("no_decay, make", [("bias", reference_parameter_groups), ("bias_norm_embedding", parameter_groups)])
def test_make_parameter_groups_follows_the_policy(no_decay, make):
    module = make_module(clip="tiny", max_words=8, max_frames=3, temporal_layers=1)
    model = module.model
    built = make_parameter_groups(model, model.towers, 1e-4, 1e-3, 0.2, no_decay)
    assert _by_name(built) == _by_name(make(model, model.towers, 1e-4, 1e-3, 0.2))


def test_default_optimizer_is_adamw_with_the_paper_betas_and_eps_over_the_groups():
    module = make_module(clip="tiny", max_words=8, max_frames=3, temporal_layers=1, lr=1e-3, backbone_lr_scale=0.01,
                         weight_decay=0.05, scheduler=None)
    optimizer = module.configure_optimizers()
    assert type(optimizer) is AdamW and isinstance(optimizer, torch.optim.AdamW)
    expected = parameter_groups(module.model, module.model.towers, 1e-3, 0.01, 0.05)
    assert _by_name(optimizer.param_groups) == _by_name(expected)
    assert {(g["lr"], g["weight_decay"]) for g in optimizer.param_groups} == {(1e-5, 0.05), (1e-5, 0.0), (1e-3, 0.05), (1e-3, 0.0)}
    assert all(g["betas"] == (0.9, 0.98) and g["eps"] == 1e-6 for g in optimizer.param_groups)
    assert module.hparams["optimizer"] == {"class_path": "xclip_pl.train.optim.AdamW"}


def test_any_torch_optimizer_gets_the_groups_and_its_init_args():
    module = make_module(clip="tiny", max_words=8, max_frames=3, temporal_layers=1, scheduler=None,
                         optimizer=partial(torch.optim.SGD, momentum=0.9))
    optimizer = module.configure_optimizers()
    assert type(optimizer) is torch.optim.SGD and all(g["momentum"] == 0.9 for g in optimizer.param_groups)
    assert module.hparams["optimizer"] == {"class_path": "torch.optim.sgd.SGD", "init_args": {"momentum": 0.9}}


def test_an_optimizer_a_checkpoint_cannot_record_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model.optimizer=.*give a class or functools.partial"):
        make_module(clip="tiny", max_words=8, max_frames=3, temporal_layers=1, optimizer=lambda params, **kw: None)


def test_fused_adamw_steps_like_the_single_tensor_loop():
    """``fused: true`` (the fast overlay) gives the same update as torch's plain per-tensor AdamW loop."""
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(7)]

    def run(make):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        groups = [{"params": [params[0]], "lr": 1e-2, "weight_decay": 0.2},
                  {"params": [params[1]], "lr": 1e-3, "weight_decay": 0.0}]
        optimizer = make(groups)
        for step in range(3):
            for i, p in enumerate(params):
                p.grad = torch.sin(torch.arange(p.numel(), dtype=torch.float32).view_as(p) + step + i)
            optimizer.step()
        return params

    fused = run(lambda g: AdamW(g, lr=1e-4, weight_decay=0.0, fused=True))
    loop = run(lambda g: torch.optim.AdamW(g, lr=1e-4, betas=(0.9, 0.98), eps=1e-6, foreach=False, fused=False))
    assert not torch.equal(fused[0], start[0])
    for a, b in zip(fused, loop):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
