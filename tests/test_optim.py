"""The default (``hf``) learning-rate schedule: values against hand computations."""
from __future__ import annotations

import math

import pytest
import torch

from xclip_pl.train.schedules import warmup_cosine


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
