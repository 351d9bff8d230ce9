"""Exact resume, end to end (issue 14): a real `xclip-pl fit` process (the W&B logger, offline as for a user who
is not logged in) is SIGKILLed, mid-epoch or while it writes last.ckpt, then resumed with the documented command
`xclip-pl fit --config <recipe> --ckpt_path last`; the resumed run must continue the same run directory and W&B
run and end with the same weights, optimiser state, checkpoints and test metrics as a run that was never
interrupted (computed independently, in its own directory).

Tiny CLIP, 8 synthetic videos (40 pairs, batch 8: 5 steps per epoch), 2 epochs, last.ckpt every 2 steps."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from xclip_pl.data.synthetic import ensure_synthetic_msrvtt
from xclip_pl.train.checkpoint_io import partial_path

TESTS = Path(__file__).parent
STEPS_PER_EPOCH, EPOCHS = 5, 2


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    ensure_synthetic_msrvtt(root, num_train=8, num_test=6, seed=0, progress=False)
    return root


def write_config(run: Path, data_root: Path, num_workers: int = 0, pause: dict | None = None) -> Path:
    """The recipe of every run here; ``pause``: a tests/helpers_resume.py callback that stops the run to be killed."""
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": EPOCHS, "log_every_n_steps": 1,
                    "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(run / "runs"),
                    "logger": {"class_path": "xclip_pl.loggers.XCLIPWandbLogger",
                               "init_args": {"save_dir": str(run / "runs"), "project": "xclip-pl"}},
                    "callbacks": [pause] if pause else []},
        "checkpoint": {"last_every_n_train_steps": 2},
        "model": {"model": {"class_path": "xclip_pl.model.xclip.XCLIP", "init_args": {"clip": "tiny", "temporal_layers": 1}},
                  "lr": 1e-3},
        "data": {"class_path": "datamodules.synthetic.SyntheticDataModule",
                 "init_args": {"root": str(data_root), "num_train": 8, "num_test": 6, "max_words": 16, "max_frames": 3,
                               "image_size": 32, "batch_size": 8, "eval_batch_size": 4, "num_workers": num_workers}},
    }
    run.mkdir(parents=True, exist_ok=True)
    path = run / ("killed.yaml" if pause else "recipe.yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def environment(run: Path) -> dict[str, str]:
    """Not logged in to W&B (so the logger runs offline, the default), tests/ importable for the helpers."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY", "NETRC", "WANDB_SERVICE")}
    home = run / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
               WANDB_SILENT="true", OMP_NUM_THREADS="1")
    return env


def fit(run: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "xclip_pl.cli", "fit", "--config", str(config), *args],
                            cwd=run, env=environment(run), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def fit_and_kill(run: Path, config: Path) -> None:
    """Start the run, wait until its pause callback says it is at the chosen point, SIGKILL it."""
    marker = run / "paused"
    log = open(run / "killed.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen([sys.executable, "-m", "xclip_pl.cli", "fit", "--config", str(config),
                                "--test_after_fit", "false"], cwd=run, env=environment(run), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert process.poll() is None, f"the run ended before the kill point:\n{(run / 'killed.log').read_text()[-5000:]}"
            assert time.monotonic() < deadline, "the run never reached the kill point"
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


def run_dirs(run: Path) -> list[Path]:
    return sorted(p for p in (run / "runs" / "xclip-pl").iterdir() if p.is_dir())


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def metrics_table(output: str) -> list[str]:
    lines = [line for line in output.splitlines() if line.startswith(("| t2v", "| v2t"))]
    assert len(lines) == 2, output[-3000:]
    return lines


def reference_run(run: Path, data_root: Path, num_workers: int = 0) -> dict:
    """The reference: the same recipe run start to end, never killed."""
    result = fit(run, write_config(run, data_root, num_workers=num_workers))
    [directory] = run_dirs(run)
    checkpoints = directory / "checkpoints"
    return {"last": load(checkpoints / "last.ckpt"), "files": sorted(p.name for p in checkpoints.iterdir()),
            "table": metrics_table(result.stdout + result.stderr)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root) -> dict:
    return reference_run(tmp_path_factory.mktemp("uninterrupted"), data_root)


def assert_same_training(resumed: dict, reference: dict) -> None:
    """Bit-equal weights and optimiser state, same step counters."""
    assert resumed["global_step"] == reference["global_step"] == STEPS_PER_EPOCH * EPOCHS
    assert resumed["epoch"] == reference["epoch"]
    assert resumed["state_dict"].keys() == reference["state_dict"].keys()
    differing = [k for k, v in reference["state_dict"].items() if not torch.equal(resumed["state_dict"][k], v)]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}: max |diff| " + str(max(
        (resumed["state_dict"][k].float() - reference["state_dict"][k].float()).abs().max().item() for k in differing))
    moments = [(state, reference["optimizer_states"][0]["state"][key])
               for key, state in resumed["optimizer_states"][0]["state"].items()]
    assert len(moments) == len(reference["optimizer_states"][0]["state"]) > 0
    for state, expected in moments:
        for name, value in expected.items():
            assert torch.equal(torch.as_tensor(state[name]), torch.as_tensor(value)), name


def resume_and_compare(run: Path, config: Path, uninterrupted: dict, step_before: int) -> None:
    """The killed run's last.ckpt is at ``step_before``; `fit --ckpt_path last` must finish it as uninterrupted."""
    [directory] = run_dirs(run)
    run_id = directory.name
    last = directory / "checkpoints" / "last.ckpt"
    assert load(last)["global_step"] == step_before  # loads: the kill left a complete checkpoint

    result = fit(run, config, "--ckpt_path", "last")  # the documented command

    assert f"resuming from {last} (W&B run {run_id})" in result.stdout
    assert run_dirs(run) == [directory]  # the same run directory, no new one
    wandb_runs = sorted(p.name for p in (run / "runs" / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2 and all(name.endswith(f"-{run_id}") for name in wandb_runs)  # one W&B run, continued
    assert sorted(p.name for p in (directory / "checkpoints").iterdir() if p.suffix == ".ckpt") == [
        f for f in uninterrupted["files"] if f.endswith(".ckpt")]
    assert_same_training(load(last), uninterrupted["last"])
    assert metrics_table(result.stdout + result.stderr) == uninterrupted["table"]


@pytest.mark.parametrize(("kill_after_step", "step_before"), [
    (7, 6),   # killed in epoch 1 after step 7; last.ckpt from step 6, mid-epoch (batch 1 of 5 done)
    pytest.param(6, 5, marks=pytest.mark.slow),  # killed after epoch 1's first step, before that step's save;
    # last.ckpt from the end of epoch 0 (in the default suite: tests/test_resume.py, in process)
], ids=["mid-epoch", "after-epoch-end"])
def test_sigkill_then_ckpt_path_last_continues_the_run_exactly(tmp_path, data_root, uninterrupted, kill_after_step,
                                                               step_before):
    recipe = write_config(tmp_path, data_root)
    pause = {"class_path": "helpers_resume.PauseAtStep",
             "init_args": {"step": kill_after_step, "marker": str(tmp_path / "paused")}}
    fit_and_kill(tmp_path, write_config(tmp_path, data_root, pause=pause))
    resume_and_compare(tmp_path, recipe, uninterrupted, step_before)


@pytest.mark.slow
def test_sigkill_mid_epoch_with_loader_workers(tmp_path, data_root):
    # num_workers 2 (persistent): the restored loader restarts its workers at the batch after the checkpoint,
    # with the saved worker seeds and RNG states; compared with an uninterrupted 2-worker run
    reference = reference_run(tmp_path / "uninterrupted", data_root, num_workers=2)
    recipe = write_config(tmp_path / "killed", data_root, num_workers=2)
    pause = {"class_path": "helpers_resume.PauseAtStep", "init_args": {"step": 7, "marker": str(tmp_path / "killed" / "paused")}}
    fit_and_kill(tmp_path / "killed", write_config(tmp_path / "killed", data_root, num_workers=2, pause=pause))
    resume_and_compare(tmp_path / "killed", recipe, reference, 6)


@pytest.mark.parametrize("phase", ["before_rename", pytest.param("during_write", marks=pytest.mark.slow)])
def test_sigkill_while_saving_last_ckpt_keeps_the_previous_one(tmp_path, data_root, uninterrupted, phase):
    # step 6's last.ckpt save is interrupted: last.ckpt must still be step 5's complete checkpoint, and
    # resuming from it must reproduce the uninterrupted run
    recipe = write_config(tmp_path, data_root)
    pause = {"class_path": "helpers_resume.PauseInCheckpointSave",
             "init_args": {"step": 6, "marker": str(tmp_path / "paused"), "phase": phase}}
    fit_and_kill(tmp_path, write_config(tmp_path, data_root, pause=pause))
    [directory] = run_dirs(tmp_path)
    partial = partial_path(directory / "checkpoints" / "last.ckpt")
    assert partial.is_file()  # the kill did land inside the save
    if phase == "before_rename":
        assert load(partial)["global_step"] == 6  # complete, only not renamed yet
    else:
        with pytest.raises(Exception):  # noqa: B017 (torch raises RuntimeError or EOFError on a truncated file)
            load(partial)
    resume_and_compare(tmp_path, recipe, uninterrupted, 5)
