"""XCLIPRetrieval: metric naming and which stage runs the test-time re-scorings."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from helpers_model import random_ids
from torch.utils.data import DataLoader

from xclip_pl.evaluate.retrieval import retrieval_metrics
from xclip_pl.module import XCLIPRetrieval, _name_v2t

# ------------------------------------------------------------------------------------------- _name_v2t
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


def test_name_v2t_group_max_puts_the_reference_convention_under_v2t():
    metrics = retrieval_metrics(MULTI_CAPTION_SIM, CAPTION_VIDEO)
    named = _name_v2t(metrics, "group_max")
    assert named["v2t/MnR"] == pytest.approx(5 / 3)
    assert named["v2t_standard/MnR"] == pytest.approx(2.0)
    assert named["v2t/R@1"] == pytest.approx(100 / 3) and named["v2t_standard/R@1"] == pytest.approx(100 / 3)
    assert named["t2v/MnR"] == pytest.approx(1.5) and named["t2v/R@1"] == pytest.approx(400 / 6)
    assert not any(k.startswith("v2t_group_max/") for k in named)
    assert len(named) == len(metrics)


def test_name_v2t_standard_keeps_the_standard_convention_under_v2t():
    named = _name_v2t(retrieval_metrics(MULTI_CAPTION_SIM, CAPTION_VIDEO), "standard")
    assert named["v2t/MnR"] == pytest.approx(2.0)
    assert named["v2t_group_max/MnR"] == pytest.approx(5 / 3)
    assert not any(k.startswith("v2t_standard/") for k in named)


def test_name_v2t_leaves_one_caption_per_video_alone():
    # 1:1 (no group-max keys): v2t stays v2t whichever headline is asked for
    metrics = {"t2v/R@1": 50.0, "v2t/R@1": 25.0, "v2t/MnR": 1.5}
    assert _name_v2t(metrics, "group_max") == metrics


# ------------------------------------------------------------------------- test-time re-scoring stage
WORDS, FRAMES, SIZE = 8, 2, 32


class TinyEvalData(pl.LightningDataModule):
    """3 videos x 2 captions in memory, the loaders evaluation expects, and a counted QB-Norm bank."""

    eval_batch_size = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.frames = torch.randint(0, 256, (3, FRAMES, SIZE, SIZE, 3), dtype=torch.uint8)
        self.ids, self.mask = random_ids(6, WORDS, lengths=[4, 8, 6])
        self.bank_calls = 0

    def _loaders(self) -> list[DataLoader]:
        videos = [{"frames": self.frames[i], "frame_mask": torch.ones(FRAMES, dtype=torch.bool), "video_index": i,
                   "video_ok": True} for i in range(3)]
        texts = [{"input_ids": self.ids[c], "attention_mask": self.mask[c], "text_index": c, "video_index": c // 2}
                 for c in range(6)]
        return [DataLoader(videos, batch_size=4), DataLoader(texts, batch_size=4)]

    def val_dataloader(self) -> list[DataLoader]:
        return self._loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._loaders()

    def caption_bank(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.bank_calls += 1
        return random_ids(size, WORDS, lengths=[5, 7])


def test_test_time_rescorings_run_in_test_only():
    module = XCLIPRetrieval(clip="tiny", max_words=WORDS, max_frames=FRAMES, temporal_layers=1, log_examples=0,
                            eval_kernel="torch", test_time=["dsl", "qb_norm", "sinkhorn"], qb_norm_bank_size=4)
    data = TinyEvalData()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.validate(module, datamodule=data, verbose=False)
    logged = set(trainer.callback_metrics)
    assert "val/t2v/R@1" in logged
    assert not [k for k in logged if k.startswith(("val/dsl/", "val/qb_norm/", "val/sinkhorn/"))]
    assert data.bank_calls == 0  # the QB-Norm bank is never encoded at validation

    trainer.test(module, datamodule=data, verbose=False)
    logged = set(trainer.callback_metrics)
    assert {"test/t2v/R@1", "test/dsl/t2v/R@1", "test/qb_norm/t2v/R@1", "test/sinkhorn/v2t/R@1"} <= logged
    assert data.bank_calls == 1
