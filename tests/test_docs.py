"""Every test that docs/fidelity.md cites exists in tests/ (the file and the test function of
``test_x.py::test_name``; parametrised ids such as ``[auto]`` are stripped), and is cited by name."""
from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
FIDELITY = TESTS.parent / "docs" / "fidelity.md"
#: ``test_x.py`` or ``tests/test_x.py``, optionally ``::test_name`` (or ``::TestClass::test_name``) and a
#: parametrised id
CITATION = re.compile(r"(?:tests/)?(test_\w+\.py)(?:::(\w+(?:::\w+)?)(?:\[[^\]`]*\])?)?")


def cited_tests(markdown: str) -> list[tuple[str, str | None]]:
    """``(file, test name or None)`` for every test citation in ``markdown``, in order."""
    return [(m.group(1), m.group(2)) for m in CITATION.finditer(markdown)]


def defined_tests(path: Path) -> set[str]:
    """Names of the test functions of a test file: module-level ``test_*`` functions and ``Test*`` methods."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        names |= {f"{cls.name}::{n.name}" for n in cls.body if isinstance(n, ast.FunctionDef)}
    return {n for n in names if n.split("::")[-1].startswith("test_")}


def missing_citations(markdown: str, tests_dir: Path) -> list[str]:
    """The citations of ``markdown`` that name no file or no test function under ``tests_dir``."""
    missing = []
    for file, name in cited_tests(markdown):
        path = tests_dir / file
        if not path.is_file():
            missing.append(file)
        elif name is not None and name not in defined_tests(path):
            missing.append(f"{file}::{name}")
    return missing


def test_citation_parser():
    text = "| `tests/test_a.py::test_one[auto]`, `test_b.py` (note), `test_c.py::test_two` and tests/test_d.py |"
    assert cited_tests(text) == [("test_a.py", "test_one"), ("test_b.py", None), ("test_c.py", "test_two"),
                                 ("test_d.py", None)]


def test_missing_citations_are_found(tmp_path):
    source = "def test_real():\n    pass\n\nclass TestGroup:\n    def test_m(self):\n        pass\n"
    (tmp_path / "test_here.py").write_text(source)
    text = ("`test_here.py::test_real` `test_here.py::freezing` `test_gone.py` `test_here.py` "
            "`test_here.py::TestGroup::test_m[x-1]` `test_here.py::TestGroup`")
    assert missing_citations(text, tmp_path) == ["test_here.py::freezing", "test_gone.py", "test_here.py::TestGroup"]


def test_every_test_cited_in_fidelity_md_exists():
    text = FIDELITY.read_text(encoding="utf-8")
    assert len(cited_tests(text)) >= 25  # both tables cite tests
    assert missing_citations(text, TESTS) == []


def test_fidelity_md_cites_tests_by_name():
    """A bare file (``test_similarity.py``) says nothing about which test checks the row: name the test."""
    bare = [file for file, name in cited_tests(FIDELITY.read_text(encoding="utf-8")) if name is None]
    assert bare == []


ARCHITECTURE = TESTS.parent / "docs" / "architecture.md"
SRC = TESTS.parent / "src" / "xclip_pl"


def module_test_table(markdown: str) -> dict[str, list[str]]:
    """``module path -> test files`` from the "Where each module is tested" table of docs/architecture.md."""
    rows = re.findall(r"^\| `([^`]+\.py)` \| (.+) \|$", markdown, flags=re.M)
    return {module: re.findall(r"`tests/(test_\w+\.py)`", tests) for module, tests in rows}


def modules_with_code() -> list[str]:
    """Every module of the package, relative to src/xclip_pl; ``__init__.py`` files only when they hold code."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "__init__.py" and not any(isinstance(n, (ast.FunctionDef, ast.ClassDef))
                                                  for n in ast.parse(path.read_text()).body):
            continue
        found.append(path.relative_to(SRC).as_posix())
    return found


def test_every_module_has_a_test_file():
    table = module_test_table(ARCHITECTURE.read_text(encoding="utf-8"))
    assert [m for m in modules_with_code() if m not in table] == []
    assert [m for m in table if not m.startswith("datamodules/") and not (SRC / m).is_file()] == []
    missing = sorted({t for tests in table.values() for t in tests if not (TESTS / t).is_file()})
    assert missing == [] and all(table.values())


def test_module_table_parser():
    table = module_test_table("| module | tests |\n|---|---|\n| `a/b.py` | `tests/test_b.py`, `tests/test_c.py` |\n")
    assert table == {"a/b.py": ["test_b.py", "test_c.py"]}
