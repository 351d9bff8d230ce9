"""The learning-rate schedules (switch ``model.scheduler``): the multipliers against hand computations, and the
``LambdaLR`` classes a recipe names (``WarmupCosine``, ``ReferenceWarmupCosine``) equal to them."""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from helpers_model import make_module
from torch import nn

from xclip_pl.train.bertadam import BertAdam
from xclip_pl.train.schedules import ReferenceWarmupCosine, WarmupCosine, reference_warmup_cosine, warmup_cosine


# ------------------------------------------------------------------------------- hf: WarmupCosine (default)
def test_warmup_then_renormalised_cosine_by_hand():
    # 10 steps, warmup_ratio 0.2 -> 2 warmup steps: 0/2, 1/2; then cosine over the remaining 8 steps,
    # 0.5 * (1 + cos(pi * (step - 2) / 8)).
    factor = warmup_cosine(10, 0.2)
    expected = {
        0: 0.0,
        1: 0.5,
        2: 1.0,                                   # cos(0)
        4: 0.5 * (1 + 1 / math.sqrt(2)),          # cos(pi/4) = 0.7071...: 0.85355...
        6: 0.5,                                   # cos(pi/2) = 0
        8: 0.5 * (1 - 1 / math.sqrt(2)),          # cos(3pi/4): 0.14644...
        10: 0.0,                                  # cos(pi)
        12: 0.0,                                  # past the end: stays at 0
    }
    for step, value in expected.items():
        assert factor(step) == pytest.approx(value, abs=1e-12), step


def test_no_warmup_starts_at_the_full_learning_rate():
    # warmup_ratio 0: step 0 is the start of the cosine (factor 1); step 5 of 10 is cos(pi/2) -> 0.5.
    factor = warmup_cosine(10, 0.0)
    assert factor(0) == 1.0
    assert factor(5) == pytest.approx(0.5, abs=1e-12)
    # through LambdaLR: the first optimiser step runs at the configured lr
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 10)))


def test_warmup_ratio_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match=r"warmup_ratio=1.5"):
        warmup_cosine(10, 1.5)
    with pytest.raises(ValueError, match=r"warmup_ratio=-0.1"):
        warmup_cosine(10, -0.1)


# ---------------------------------------------------------------------- reference: ReferenceWarmupCosine
def test_reference_schedule_values():
    f = reference_warmup_cosine(1000, 0.1)
    assert f(0) == 0.0 and f(50) == pytest.approx(0.5) and f(99) == pytest.approx(0.99)
    assert f(100) == pytest.approx(0.5 * (1 + math.cos(0.1 * math.pi))) == pytest.approx(0.97553, abs=1e-5)  # the jump
    assert f(500) == pytest.approx(0.5) and f(1000) == pytest.approx(0.0, abs=1e-12) and f(1200) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="total_steps"):
        reference_warmup_cosine(0, 0.1)


def test_first_update_has_lr_zero_with_lambdalr():
    p = nn.Parameter(torch.ones(3))
    opt = BertAdam([p], lr=0.1, weight_decay=0.2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, reference_warmup_cosine(10, 0.5))
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    assert torch.equal(p.detach(), torch.ones(3)) and opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.2)


# ----------------------------------------------------------------------------------------- the classes
def lrs(scheduler_class, steps: int, total_steps: int, warmup_ratio: float, lr: float = 0.1) -> list[float]:
    """The lr of each of ``steps`` optimiser steps under ``scheduler_class`` (stepped after every step)."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = scheduler_class(optimizer, total_steps=total_steps, warmup_ratio=warmup_ratio)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_warmup_cosine_class_follows_the_hand_computed_multipliers():
    # the same hand values as test_warmup_then_renormalised_cosine_by_hand, x lr 0.1
    seen = lrs(WarmupCosine, 13, total_steps=10, warmup_ratio=0.2)
    expected = {0: 0.0, 1: 0.5, 2: 1.0, 4: 0.5 * (1 + 1 / math.sqrt(2)), 6: 0.5, 8: 0.5 * (1 - 1 / math.sqrt(2)), 10: 0.0, 12: 0.0}
    for step, value in expected.items():
        assert seen[step] == pytest.approx(0.1 * value, abs=1e-12), step
    assert lrs(WarmupCosine, 1, total_steps=10, warmup_ratio=0.0) == [pytest.approx(0.1)]  # no warmup: full lr first


def test_reference_warmup_cosine_class_follows_the_hand_computed_multipliers():
    # the same hand values as test_reference_schedule_values, x lr 0.1
    seen = lrs(ReferenceWarmupCosine, 1201, total_steps=1000, warmup_ratio=0.1)
    assert seen[0] == 0.0 and seen[50] == pytest.approx(0.05) and seen[99] == pytest.approx(0.099)
    assert seen[100] == pytest.approx(0.1 * 0.97553, abs=1e-6)  # the jump at the end of warmup
    assert seen[500] == pytest.approx(0.05) and seen[1000] == pytest.approx(0.0, abs=1e-12) and seen[1200] == pytest.approx(0.0, abs=1e-12)


def test_schedule_classes_check_their_arguments():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=r"model.scheduler.init_args.warmup_ratio=1.5"):
        WarmupCosine(optimizer, total_steps=10, warmup_ratio=1.5)
    with pytest.raises(ValueError, match="total_steps"):
        ReferenceWarmupCosine(optimizer, total_steps=0)


@pytest.mark.parametrize("scheduler, factor", [(WarmupCosine, warmup_cosine), (ReferenceWarmupCosine, reference_warmup_cosine)])
def test_the_module_steps_the_schedule_every_step_over_the_estimated_steps(scheduler, factor):
    """``configure_optimizers`` calls ``scheduler(optimizer, total_steps=trainer.estimated_stepping_batches)``,
    per step (``interval: step``): the multipliers are the functions' for that total."""
    module = make_module(clip="tiny", max_words=8, max_frames=3, temporal_layers=1, lr=1e-3,
                         scheduler=partial(scheduler, warmup_ratio=0.25))
    module.trainer = type("FakeTrainer", (), {"estimated_stepping_batches": 8})()  # configure_optimizers reads only this
    config = module.configure_optimizers()
    built = config["lr_scheduler"]["scheduler"]
    assert type(built) is scheduler and config["lr_scheduler"]["interval"] == "step" and built.total_steps == 8
    for fn in built.lr_lambdas:  # one per parameter group
        assert [fn(s) for s in range(10)] == [factor(8, 0.25)(s) for s in range(10)]


def test_no_scheduler_keeps_the_learning_rate_constant():
    module = make_module(clip="tiny", max_words=8, max_frames=3, temporal_layers=1, scheduler=None,
                         optimizer=partial(BertAdam, max_grad_norm=1.0))
    assert isinstance(module.configure_optimizers(), BertAdam) and module.hparams["scheduler"] is None
