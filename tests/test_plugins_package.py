"""The generic top-level name ``datamodules``: the CLI checks at start that it is xclip-pl's package."""
from __future__ import annotations

import sys

import pytest

import datamodules
from xclip_pl import cli


def forget_datamodules(monkeypatch) -> None:
    for name in [n for n in sys.modules if n == "datamodules" or n.startswith("datamodules.")]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test


def test_our_package_carries_the_marker_and_passes():
    assert datamodules.__xclip_pl__ is True
    cli._import_plugins()


def test_a_foreign_datamodules_earlier_on_the_path_is_a_clear_error(tmp_path, monkeypatch):
    foreign = tmp_path / "datamodules"
    foreign.mkdir()
    (foreign / "__init__.py").write_text('"""Someone else\'s datamodules."""\n')
    forget_datamodules(monkeypatch)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError) as error:
        cli._import_plugins()
    message = str(error.value)
    assert str(foreign) in message and "another package than xclip-pl's" in message
    assert "Rename or uninstall that package" in message and "'xclip_pl.datamodules' entry-point group" in message
    assert sys.modules["datamodules"].__file__ == str(foreign / "__init__.py")  # it was the foreign one


def test_after_the_foreign_package_is_gone_ours_is_found_again():
    assert sys.modules["datamodules"] is datamodules  # the test above restored sys.modules and sys.path
    cli._import_plugins()
