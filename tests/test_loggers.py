"""XCLIPWandbLogger and wandb_logged_in (src/xclip_pl/loggers.py): online only when W&B credentials exist,
the save directory, project defaults, no upload offline. HOME points at an empty temporary directory in every
test, so the machine's own ~/.netrc never decides a result, and no W&B run is ever started (no network)."""
import os

import pytest

from xclip_pl.loggers import XCLIPWandbLogger, wandb_logged_in


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    return home


def write_netrc(home, text: str, mode: int = 0o600) -> None:
    path = home / ".netrc"
    path.write_text(text)
    path.chmod(mode)


# ---------------------------------------------------------------------------------------------- wandb_logged_in


def test_not_logged_in_without_key_or_netrc():
    assert wandb_logged_in() is False


def test_logged_in_with_an_api_key(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert wandb_logged_in() is True


def test_an_empty_api_key_is_not_a_login(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "")
    assert wandb_logged_in() is False


def test_logged_in_with_a_netrc_entry_for_the_wandb_api(_isolated):
    # What `wandb login` writes.
    write_netrc(_isolated, "machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    assert wandb_logged_in() is True


def test_netrc_for_other_hosts_only_is_not_a_login(_isolated):
    write_netrc(_isolated, "machine github.com\n  login user\n  password secret\n")
    assert wandb_logged_in() is False


def test_an_unparsable_netrc_is_not_a_login(_isolated):
    write_netrc(_isolated, "machine api.wandb.ai login user password secret\nthis is not netrc\n")
    assert wandb_logged_in() is False


# ---------------------------------------------------------------------------------------------- XCLIPWandbLogger


def test_offline_when_not_logged_in_and_checkpoints_not_uploaded(tmp_path):
    # log_model=True offline would make WandbLogger raise; the logger drops it instead.
    logger = XCLIPWandbLogger(save_dir=str(tmp_path / "r"), log_model=True)
    assert logger._offline is True
    assert logger._log_model is False


def test_online_when_logged_in(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    logger = XCLIPWandbLogger(save_dir=str(tmp_path / "r"), log_model=True)
    assert logger._offline is False
    assert logger._log_model is True


def test_online_when_netrc_has_a_wandb_entry(tmp_path, _isolated):
    write_netrc(_isolated, "machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    assert XCLIPWandbLogger(save_dir=str(tmp_path / "r"))._offline is False


@pytest.mark.parametrize("logged_in", [False, True])
@pytest.mark.parametrize("offline", [False, True])
def test_explicit_offline_wins_over_the_login(tmp_path, monkeypatch, logged_in, offline):
    if logged_in:
        monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    logger = XCLIPWandbLogger(save_dir=str(tmp_path / "r"), offline=offline, log_model=True)
    assert logger._offline is offline
    assert logger._log_model is (not offline)


def test_log_model_off_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert XCLIPWandbLogger(save_dir=str(tmp_path / "r"))._log_model is False


def test_save_dir_is_created_and_used_as_the_wandb_dir(tmp_path):
    save_dir = tmp_path / "a" / "b" / "runs"
    logger = XCLIPWandbLogger(save_dir=str(save_dir))
    assert save_dir.is_dir()
    assert logger.save_dir == str(save_dir)
    assert logger._wandb_init["dir"] == str(save_dir)  # wandb.init(dir=...) puts its files in save_dir/wandb


def test_existing_save_dir_is_fine(tmp_path):
    save_dir = tmp_path / "runs"
    save_dir.mkdir()
    (save_dir / "keep.txt").write_text("x")
    XCLIPWandbLogger(save_dir=str(save_dir))
    assert (save_dir / "keep.txt").read_text() == "x"


def test_defaults(tmp_path):
    logger = XCLIPWandbLogger()
    assert (tmp_path / "runs").is_dir()  # relative to the working directory
    assert logger.save_dir == "runs"
    assert logger.name == "xclip-pl"  # Lightning's checkpoint dir: save_dir/<project>/<run id>/checkpoints
    assert logger._wandb_init["project"] == "xclip-pl"
    assert logger._wandb_init["name"] is None  # W&B picks one
    assert logger._wandb_init.get("tags") is None


def test_project_name_and_tags_reach_wandb_init(tmp_path):
    logger = XCLIPWandbLogger(save_dir=str(tmp_path / "r"), project="proj", name="run-1", tags=["a", "b"])
    assert logger.name == "proj"
    assert logger._wandb_init["project"] == "proj"
    assert logger._wandb_init["name"] == "run-1"
    assert logger._wandb_init["tags"] == ["a", "b"]


def test_wandb_silent_is_a_default_only(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    XCLIPWandbLogger(save_dir=str(tmp_path / "r"))
    assert os.environ["WANDB_SILENT"] == "true"
    monkeypatch.setenv("WANDB_SILENT", "false")
    XCLIPWandbLogger(save_dir=str(tmp_path / "r"))
    assert os.environ["WANDB_SILENT"] == "false"


def test_construction_starts_no_run(tmp_path):
    import wandb

    save_dir = tmp_path / "r"
    run_before = wandb.run  # earlier tests in the session may have left W&B's disabled-mode run behind
    logger = XCLIPWandbLogger(save_dir=str(save_dir), offline=True)
    assert logger._experiment is None  # the run starts lazily, on first use by the Trainer
    assert wandb.run is run_before
    assert os.environ["WANDB_MODE"] == "disabled"  # WandbLogger sets dryrun only when the run starts
    assert list(save_dir.iterdir()) == []


def test_is_a_lightning_wandb_logger(tmp_path):
    from pytorch_lightning.loggers import WandbLogger

    assert isinstance(XCLIPWandbLogger(save_dir=str(tmp_path / "r")), WandbLogger)


def test_id_continues_a_run_and_names_its_directory(tmp_path):
    logger = XCLIPWandbLogger(save_dir=str(tmp_path / "r"), id="abc123")
    assert logger._wandb_init["id"] == "abc123" and logger._wandb_init["resume"] == "allow"
    assert logger.version == "abc123"  # Lightning's checkpoint dir: save_dir/<project>/abc123/checkpoints


def test_without_id_each_run_gets_a_new_one(tmp_path):
    first, second = XCLIPWandbLogger(save_dir=str(tmp_path / "r")), XCLIPWandbLogger(save_dir=str(tmp_path / "r"))
    assert first._wandb_init.get("id") is None and second._wandb_init.get("id") is None


def test_resume_run_sets_the_id_before_the_run_starts(tmp_path):
    logger = XCLIPWandbLogger(save_dir=str(tmp_path / "r"))
    logger.resume_run("run42")
    assert logger.version == "run42" and logger._wandb_init["id"] == "run42"
    assert logger._experiment is None  # still lazy


def test_resume_run_refuses_once_another_run_started(tmp_path):
    logger = XCLIPWandbLogger(save_dir=str(tmp_path / "r"))
    logger._experiment = type("Run", (), {"id": "started"})()
    logger.resume_run("started")  # the same run: fine
    with pytest.raises(RuntimeError, match="already started"):
        logger.resume_run("other")
