"""Which epoch the best-checkpoint callback keeps when the monitored value ties."""
from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from xclip_pl.callbacks.checkpointing import XCLIPModelCheckpoint


class ScriptedScore(pl.LightningModule):
    """One training step per epoch; validation logs the next value of a fixed sequence as ``val/score``."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.scores = scores

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self) -> None:
        self.log("val/score", self.scores[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(torch.ones(1, 1), batch_size=1)

    def val_dataloader(self):
        return DataLoader(torch.ones(1, 1), batch_size=1)


def fit(tmp_path: Path, scores: list[float], ties: str, save_top_k: int = 1,
        save_last: bool = False) -> XCLIPModelCheckpoint:
    callback = XCLIPModelCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", save_top_k=save_top_k,
                                    filename="e{epoch}", auto_insert_metric_name=False, ties=ties,
                                    save_last=save_last)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=len(scores), logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[callback])
    trainer.fit(ScriptedScore(scores))
    return callback


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.ckpt"))


@pytest.mark.parametrize(("ties", "kept"), [("later", "e2.ckpt"), ("earlier", "e1.ckpt")])
def test_a_tie_keeps_the_epoch_the_rule_names(tmp_path, ties, kept):
    callback = fit(tmp_path, [10.0, 12.0, 12.0], ties)
    assert Path(callback.best_model_path).name == kept
    assert float(callback.best_model_score) == 12.0
    assert files(tmp_path) == [kept]  # save_top_k 1: only that file is left on disk


@pytest.mark.parametrize(("ties", "kept", "best"), [("later", ["e2.ckpt", "e3.ckpt"], "e3.ckpt"),
                                                    ("earlier", ["e0.ckpt", "e2.ckpt"], "e0.ckpt")])
def test_top_k_ties_evict_and_crown_by_the_rule(tmp_path, ties, kept, best):
    # k = 2 over 12, 10, 12, 12. "later": epoch 2 evicts 10, epoch 3 evicts the earlier 12 (epoch 0) and is
    # the best of the tied 12s. "earlier": a tie never replaces, so epochs 0 and 2 stay and epoch 0 is best.
    callback = fit(tmp_path, [12.0, 10.0, 12.0, 12.0], ties, save_top_k=2)
    assert files(tmp_path) == kept
    assert Path(callback.best_model_path).name == best


def test_a_strictly_better_epoch_wins_under_both_rules(tmp_path):
    for ties in ("later", "earlier"):
        callback = fit(tmp_path / ties, [12.0, 11.0, 13.0], ties)
        assert Path(callback.best_model_path).name == "e2.ckpt"


def test_ties_must_be_a_known_rule():
    with pytest.raises(ValueError, match=r"checkpoint.ties='latest'.*'earlier'.*'later'"):
        XCLIPModelCheckpoint(monitor="val/score", mode="max", ties="latest")


@pytest.mark.parametrize("ties", ["later", "earlier"])
def test_last_ckpt_holds_the_last_epoch_not_the_best(tmp_path, ties):
    # Best at epoch 0, worse afterwards: no best file is written after epoch 0, yet last.ckpt must be the
    # state after epoch 2 (one step per epoch -> global_step 3), so a resume loses nothing (issue 14).
    callback = fit(tmp_path, [12.0, 10.0, 11.0], ties, save_last=True)
    assert Path(callback.best_model_path).name == "e0.ckpt"
    assert files(tmp_path) == ["e0.ckpt", "last.ckpt"]  # no extra best files
    best = torch.load(tmp_path / "e0.ckpt", map_location="cpu", weights_only=False)
    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert (best["epoch"], best["global_step"]) == (0, 1)
    assert (last["epoch"], last["global_step"]) == (2, 3)
    assert Path(callback.last_model_path).name == "last.ckpt"
