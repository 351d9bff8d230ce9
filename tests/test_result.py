"""evaluate/result.py: ``name_v2t`` puts the chosen multi-caption video-to-text convention under ``v2t/*``
(hand-computed ranks), and ``RetrievalResult`` is what the module hands to retrieval callbacks
(its end-to-end use: tests/test_callbacks_base.py)."""
from __future__ import annotations

import pytest
import torch

from xclip_pl.evaluate.result import name_v2t
from xclip_pl.evaluate.retrieval import retrieval_metrics

# ------------------------------------------------------------------------------------------- name_v2t
# 3 videos, 2 captions each (caption c belongs to video c // 2). Ranks by hand:
#   t2v: c0 1, c1 3 (0.8, 0.3 above its 0.2), c2 1, c3 1, c4 1, c5 2 (0.3 above 0.1)  -> MnR 9/6
#   v2t standard (best own caption among all 6): video0 1 (0.9); video1 2 (0.8 of c1 above 0.7);
#       video2 3 (0.6 of c2 and 0.5 of c3 above 0.4)                                  -> MnR 6/3 = 2
#   v2t group-max (caption groups scored by their best caption): video0 column [0.9, 0.1, 0.3] -> 1;
#       video1 [0.8, 0.7, 0.2] -> 2; video2 [0.3, 0.6, 0.4] -> 2                        -> MnR 5/3
MULTI_CAPTION_SIM = torch.tensor([
    [0.9, 0.1, 0.0],
    [0.2, 0.8, 0.3],
    [0.1, 0.7, 0.6],
    [0.0, 0.6, 0.5],
    [0.0, 0.2, 0.4],
    [0.3, 0.0, 0.1],
])
CAPTION_VIDEO = torch.tensor([0, 0, 1, 1, 2, 2])


def testname_v2t_group_max_puts_the_reference_convention_under_v2t():
    metrics = retrieval_metrics(MULTI_CAPTION_SIM, CAPTION_VIDEO)
    named = name_v2t(metrics, "group_max")
    assert named["v2t/MnR"] == pytest.approx(5 / 3)
    assert named["v2t_standard/MnR"] == pytest.approx(2.0)
    assert named["v2t/R@1"] == pytest.approx(100 / 3) and named["v2t_standard/R@1"] == pytest.approx(100 / 3)
    assert named["t2v/MnR"] == pytest.approx(1.5) and named["t2v/R@1"] == pytest.approx(400 / 6)
    assert not any(k.startswith("v2t_group_max/") for k in named)
    assert len(named) == len(metrics)


def testname_v2t_standard_keeps_the_standard_convention_under_v2t():
    named = name_v2t(retrieval_metrics(MULTI_CAPTION_SIM, CAPTION_VIDEO), "standard")
    assert named["v2t/MnR"] == pytest.approx(2.0)
    assert named["v2t_group_max/MnR"] == pytest.approx(5 / 3)
    assert not any(k.startswith("v2t_standard/") for k in named)


def testname_v2t_leaves_one_caption_per_video_alone():
    # 1:1 (no group-max keys): v2t stays v2t whichever headline is asked for
    metrics = {"t2v/R@1": 50.0, "v2t/R@1": 25.0, "v2t/MnR": 1.5}
    assert name_v2t(metrics, "group_max") == metrics
