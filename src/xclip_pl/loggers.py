"""Weights & Biases logger that is online when the user is logged in and offline otherwise."""
from __future__ import annotations

import netrc
import os
from pathlib import Path

from pytorch_lightning.loggers import WandbLogger


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (WANDB_API_KEY or a ~/.netrc entry for the W&B API)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


class XCLIPWandbLogger(WandbLogger):
    """``WandbLogger`` with project defaults.

    Args:
        save_dir: directory of the run (W&B files under ``save_dir/wandb``, checkpoints under
            ``save_dir/<project>/<run id>/checkpoints``).
        project: W&B project name.
        name: run name shown in the dashboard (default: W&B picks one).
        offline: None = online when logged in to W&B (``wandb login``), offline otherwise; offline runs
            can be uploaded later with ``wandb sync <save_dir>/wandb/offline-run-*``.
        log_model: upload checkpoints as W&B artifacts (online runs only).
        tags: W&B tags.
        id: W&B run id to continue (``resume="allow"``: continued if it exists, created otherwise); it is also
            the run's directory ``save_dir/<project>/<id>``. None = a new id. ``fit --ckpt_path last`` sets it
            from the checkpoint it resumes (:meth:`resume_run`).
    """

    def __init__(self, save_dir: str = "runs", project: str = "xclip-pl", name: str | None = None,
                 offline: bool | None = None, log_model: bool = False, tags: list[str] | None = None,
                 id: str | None = None) -> None:  # noqa: A002 (W&B's and Lightning's name)
        if offline is None:
            offline = not wandb_logged_in()
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        super().__init__(save_dir=save_dir, project=project, name=name, offline=offline,
                         log_model=log_model and not offline, tags=tags, id=id)

    def resume_run(self, run_id: str) -> None:
        """Continue the W&B run ``run_id`` (and its checkpoint directory) instead of starting a new one; only
        before the run has started (the Trainer starts it lazily, on first use)."""
        if self._experiment is not None and self._experiment.id != run_id:
            raise RuntimeError(f"the W&B run {self._experiment.id} has already started; cannot continue {run_id}")
        self._wandb_init["id"] = self._id = run_id
