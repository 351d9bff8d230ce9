"""Clear endings for command-line mistakes: a parse error of the ``xclip-pl`` command gets a last line that names
the config file and line (YAML syntax errors), or the key, what was wrong and the valid names (typos, wrong types,
unknown classes).

jsonargparse reports these errors nested ("Parser key "data": Does not validate against any of the Union
subtypes ... Option 'batchsize' is not accepted") and a YAML error in a ``--config`` file as ``in "<unicode
string>", line 19``. :func:`explain_parse_error` keeps that report and adds one summary line;
:func:`clear_parse_errors` applies it to every error the command's parsers end with.
"""
from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml

_UNICODE_STRING = '"<unicode string>"'
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_NOT_ACCEPTED = re.compile(r"class_path '([\w.]+)':\s*Option '([^']+)' is not accepted")
_NO_ATTRIBUTE = re.compile(r"class_path '([\w.]+)':\s*module '([\w.]+)' has no attribute '(\w+)'")
_NOT_ACCEPTED_TOP = re.compile(r"(?:Subcommand|Group) '([\w.]+)' does not accept option '([^']+)'")
_OPTION_NOT_ACCEPTED = re.compile(r"^Option '([^']+)' is not accepted")
_UNION = re.compile(r"Subtypes: \[(.*)\][\s\S]*Given value: (.*)")
_EXPECTED = re.compile(r"Expected a (.+?)\. Got value: (.*)")


def config_files(argv: Sequence[str]) -> list[Path]:
    """The files given with ``--config`` / ``-c`` (``--config X`` or ``--config=X``), in order."""
    files = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            files.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            files.append(Path(arg.split("=", 1)[1]))
    return files


def _nested_files(path: Path, data: object) -> list[Path]:
    """The ``.yaml`` / ``.yml`` files a parsed config names as values (nested config files), that exist."""
    found = []
    if isinstance(data, dict):
        for value in data.values():
            found += _nested_files(path, value)
    elif isinstance(data, list):
        for value in data:
            found += _nested_files(path, value)
    elif isinstance(data, str) and data.endswith((".yaml", ".yml")):
        candidate = Path(data) if Path(data).is_absolute() else path.parent / data
        if candidate.is_file():
            found.append(candidate)
    return found


def yaml_error_location(files: Sequence[Path]) -> tuple[Path, str] | None:
    """``(file, "line L, column C: problem")`` of the first of ``files`` (or of the config files they nest)
    that is not valid YAML; None if they all parse."""
    queue, seen = list(files), set()
    while queue:
        path = queue.pop(0)
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
            return path, f"{where}: {error.problem or error.context}"
        except yaml.YAMLError as error:
            return path, str(error)
        queue += _nested_files(path, data)
    return None


def suggest(name: str, valid: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the valid names closest to ``name`` (empty if none is close)."""
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _type_names(text: str) -> str:
    """``<class 'int'>, <class 'NoneType'>`` -> ``int or None``; ``typing.Literal['a', 'b']`` -> ``one of 'a', 'b'``."""
    literal = re.fullmatch(r"typing\.Literal\[(.*)\]", text.strip())
    if literal:
        return f"one of {literal.group(1)}"
    names = re.findall(r"<class '([\w.]+)'>", text) or [text.strip()]
    return " or ".join("None" if n == "NoneType" else n for n in names)


def class_arguments(class_path: str) -> list[str]:
    """The init arguments a config may give ``class_path`` (as jsonargparse resolves them, ``**kwargs``
    followed into the base classes); empty if the class cannot be imported."""
    from jsonargparse import ArgumentParser

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, fail_untyped=False)
        return [k for k in parser.get_defaults().as_dict() if not k.startswith("__")]
    except Exception:
        return []


def _parser_keys(parser: object, argv: Sequence[str]) -> list[str]:
    """Every key (``trainer.max_epochs`` ...) that ``parser`` (or its subcommand named in ``argv``) accepts;
    empty if unknown."""
    subcommands = getattr(getattr(parser, "_subcommands_action", None), "_name_parser_map", {})
    sub = next((subcommands[a] for a in argv if a in subcommands), parser)
    return [a.dest for a in getattr(sub, "_actions", []) if isinstance(getattr(a, "dest", None), str)]


def _unknown_key(option: str, parser: object, argv: Sequence[str]) -> str:
    """The summary for a key the command does not have, with the closest valid keys."""
    valid = _parser_keys(parser, argv)
    head, _, last = option.rpartition(".")
    siblings = [k.rpartition(".")[2] for k in valid if k.rpartition(".")[0] == head]
    hint = (suggest(last, siblings) if siblings else "") or suggest(option, valid)
    command = next((a for a in argv if not a.startswith("-")), "fit")
    return f"{option}: there is no such key{hint} (every key: `xclip-pl {command} --help`)"


def _owner_key(message: str, before: int) -> str:
    """The outermost ``Parser key "..."`` of ``message`` before position ``before`` (e.g. ``data``)."""
    keys = _PARSER_KEY.findall(message[:before])
    return keys[0] if keys else ""


def summary(message: str, argv: Sequence[str], parser: object | None = None) -> str | None:
    """One line naming the file and line, or the key, what is wrong and what to do; None if ``message`` is
    not a mistake recognised here."""
    if _UNICODE_STRING in message:
        found = yaml_error_location(config_files(argv))
        if found:
            path, where = found
            return f"{path}, {where}: the config file is not valid YAML; fix it there"
    match = _NOT_ACCEPTED.search(message)
    if match:
        class_path, option = match.groups()
        owner = _owner_key(message, match.start())
        valid = class_arguments(class_path)
        key = f"{owner}.init_args.{option}" if owner in ("data", "model.model") else f"{owner or option}"
        listing = f" Its arguments: {', '.join(valid)}." if valid else ""
        return f"{key}: {class_path} has no argument {option!r}{suggest(option, valid) or '.'}{listing}"
    match = _NOT_ACCEPTED_TOP.search(message)
    if match:
        group, option = match.groups()
        return _unknown_key(option if group == next((a for a in argv if not a.startswith("-")), None)
                            else f"{group}.{option}", parser, argv)
    match = _OPTION_NOT_ACCEPTED.search(message)
    if match:
        return _unknown_key(match.group(1), parser, argv)
    match = _NO_ATTRIBUTE.search(message)
    if match:
        _, module, name = match.groups()
        owner = _owner_key(message, match.start())
        try:
            names = [n for n in dir(importlib.import_module(module)) if not n.startswith("_")]
        except Exception:
            names = []
        return f"{owner + '.' if owner else ''}class_path: {module} has no class {name!r}{suggest(name, names)}"
    match = _EXPECTED.search(message)
    if match:
        keys = _PARSER_KEY.findall(message[:match.start()])
        expected, value = match.groups()
        owner = keys[0] if keys else ""
        key = f"{owner}.init_args.{keys[-1]}" if len(keys) > 1 and owner in ("data", "model.model") else (
            keys[-1] if keys else "a value")
        return f"{key}: expected {_type_names(expected)}, got {value.strip()!r}"
    match = _UNION.search(message)
    keys = _PARSER_KEY.findall(message)
    if match and keys and "class_path" not in message:
        subtypes, value = match.groups()
        return f"{keys[-1]}: expected {_type_names(subtypes)}, got {value.strip()!r}"
    return None


def explain_parse_error(message: str, argv: Sequence[str], parser: object | None = None) -> str:
    """``message`` with a YAML error's ``"<unicode string>"`` replaced by the config file and, last, the
    :func:`summary` line (``message`` unchanged if none applies)."""
    line = summary(message, argv, parser)
    if line is None:
        return message
    if _UNICODE_STRING in message:
        found = yaml_error_location(config_files(argv))
        if found:
            message = message.replace(_UNICODE_STRING, f'"{found[0]}"')
    return f"{message}\n{line}"


_UNION_WRAPPER = "Does not validate against any of the Union subtypes"


def unwrap_instantiation_error(error: BaseException) -> BaseException:
    """The error a class raised while jsonargparse built it, when jsonargparse wrapped it into its "Does not
    validate against any of the Union subtypes ... Given value: Namespace(...)" report (it does for
    ``data``, whose type is ``VideoTextDataModule | None``): that report ends with every argument instead of
    the class's own message. ``error`` itself otherwise."""
    while str(error).startswith(_UNION_WRAPPER) and error.__cause__ is not None:
        error = error.__cause__
    return error


#: where reading a checkpoint fails when the file is not one (innermost frame of the traceback)
_CHECKPOINT_READERS = ("torch/serialization.py", "torch/_weights_only_unpickler.py", "/pickle.py",
                       "pytorch_lightning/utilities/migration/utils.py", "lightning_fabric/utilities/cloud_io.py")


def flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``--flag X`` / ``--flag=X`` in ``argv`` (the last one), or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def checkpoint_error(error: BaseException, argv: Sequence[str]) -> ValueError | None:
    """A ValueError naming ``--ckpt_path`` when ``error`` was raised while torch or Lightning read that file as
    a checkpoint (not a checkpoint, truncated, a bare state dict); None for any other error (a checkpoint of
    another shape has its own message)."""
    path = flag_value(argv, "--ckpt_path")
    if path is None or isinstance(error, ValueError) or error.__traceback__ is None:
        return None
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    if not tb.tb_frame.f_code.co_filename.replace("\\", "/").endswith(_CHECKPOINT_READERS):
        return None
    return ValueError(f"--ckpt_path {path}: not a checkpoint xclip-pl can read ({type(error).__name__}: {error}); "
                      "give a .ckpt written by `xclip-pl fit` (<run>/checkpoints/best-*.ckpt or last.ckpt) or by "
                      "`xclip-pl convert`; a reference checkpoint (pytorch_model.bin.N) goes through `xclip-pl convert` first")


@contextmanager
def clear_parse_errors(argv: Sequence[str]) -> Iterator[None]:
    """While inside: every parse error the command ends with (jsonargparse's ``error()`` of a parser that
    exits on errors) carries :func:`explain_parse_error`'s summary as its last line; internal parsers, whose
    errors jsonargparse catches and retries, are left alone."""
    from jsonargparse import ArgumentParser

    original = ArgumentParser.error

    def error(self, message: str, ex: Exception | None = None):
        if getattr(self, "exit_on_error", True):
            try:
                message = explain_parse_error(message, argv, self)
            except Exception:
                pass
        return original(self, message, ex)

    ArgumentParser.error = error
    try:
        yield
    finally:
        ArgumentParser.error = original
