"""setup.cfg lists packages explicitly (a second top-level package, ``datamodules``, lives outside src/), so a
new subpackage missing from the list would import in the editable install yet be absent from the wheel.
Build the wheel and check that every module and the C++ kernel source are in it."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_every_module_and_the_kernel_source(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("xclip_pl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src" / "xclip_pl").rglob("*")
               if p.suffix in (".py", ".cpp")]
    sources += [p.relative_to(ROOT).as_posix() for p in (ROOT / "datamodules").glob("*.py")]
    assert len(sources) > 60
    assert sorted(s for s in sources if s not in names) == []
