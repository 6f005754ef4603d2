"""The README and docs/ stay true: commands, options, config keys, examples, links, no repeats.

Every shell line of the README is parsed the way its program would parse it: `csetgraph`
subcommands by that command's own argparse parser, `make` targets against the Makefile, pip
extras against pyproject.toml, scripts against the tree. Every dotted config key the README
names, in a code block or inline, must exist in the config dataclasses, and every
`key=value` must load. The Python examples run. docs/index.md lists every page of docs/, every
page it links exists, and no paragraph is written twice across the README and docs/.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import shlex
import sys
import typing
from pathlib import Path

import pytest

from csetgraph.cli import COMMANDS
from csetgraph.config import Config, load_config
from csetgraph.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SECTIONS = tuple(f.name for f in dataclasses.fields(Config))
KEY = r"(?:" + "|".join(SECTIONS) + r")(?:\.[a-z_0-9]+)+"


def _text() -> str:
    return README.read_text(encoding="utf-8")


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"```.*?```", "", text, flags=re.S)


def _shell_lines(text: str) -> list[list[str]]:
    """Each command of the bash blocks as tokens (continuations joined, comments dropped)."""
    lines = []
    for block in _blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                lines.append(tokens)
    return lines


def _config_keys() -> set[str]:
    """Every dotted key of the config dataclasses, leaves and sections."""
    keys = set()

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            name = f"{prefix}{f.name}"
            keys.add(name)
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], name + ".")

    walk(Config, "")
    return keys


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, re.M))


def _extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["optional-dependencies"])


def _check_csetgraph(args: list[str]) -> None:
    """Parse ``csetgraph <args>`` with the command's own parser (exit status 0 or an error)."""
    if args in ([], ["--help"], ["-h"], ["--version"]):
        return
    name, rest = args[0], args[1:]
    assert name in COMMANDS, f"`csetgraph {name}` is not a command ({', '.join(COMMANDS)})"
    module = importlib.import_module(f"csetgraph.commands.{name}")
    try:
        module.build_parser().parse_args(rest)
    except SystemExit as exit_info:
        pytest.fail(f"`csetgraph {' '.join(args)}` does not parse (exit {exit_info.code})")


def _check_command(tokens: list[str]) -> None:
    """One README shell command against what runs it."""
    while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    program, args = tokens[0], tokens[1:]
    if program == "csetgraph":
        _check_csetgraph(args)
    elif program in ("python", "python3") and args[:2] == ["-m", "csetgraph"]:
        _check_csetgraph(args[2:])
    elif program in ("python", "python3"):
        assert (ROOT / args[0]).is_file(), f"{args[0]} does not exist"
    elif program == "make":
        assert args and args[0] in _make_targets(), f"`make {args[0]}` is not a target"
        for arg in args[1:]:
            assert arg.startswith("ARGS="), f"`make {' '.join(args)}`: only ARGS= is passed"
            if args[0] == "train":
                _check_csetgraph(["train", *shlex.split(arg[5:])])
    elif program == "pip":
        assert args[0] == "install", tokens
        for arg in args[1:]:
            extra = re.fullmatch(r"\.\[(\w+)\]", arg)
            if extra:
                assert extra.group(1) in _extras(), f"no extra {extra.group(1)!r}"
            elif arg not in (".", "-c"):
                assert (ROOT / arg).exists(), f"pip install names {arg}, which does not exist"
    else:
        pytest.fail(f"the README runs {program!r}, which this test does not know how to check")


def test_the_readme_is_short():
    lines = _text().splitlines()
    assert 100 < len(lines) < 220, f"README.md has {len(lines)} lines"


def test_every_shell_command_of_the_readme_parses():
    commands = _shell_lines(_text())
    assert len(commands) >= 10, "the README lost its commands"
    assert any(c[0] == "csetgraph" and c[1] == "train" for c in commands)
    for tokens in commands:
        _check_command(tokens)


def test_the_command_check_catches_what_it_should():
    """The checks above fail on a wrong subcommand, option, target or extra."""
    for bad in (
        ["csetgraph", "trian"],
        ["csetgraph", "evaluate", "--checkpoint", "runs/a", "--no-such-option"],
        ["make", "tests"],
        ["pip", "install", ".[gpu]"],
        ["python", "scripts/no_such_script.py"],
    ):
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            _check_command(bad)


def _named_keys(text: str) -> tuple[set[str], set[str]]:
    """Dotted config keys the text names (in code or inline), and its `key=value` settings."""
    settings = set()
    for tokens in _shell_lines(text):
        settings.update(t for t in tokens if re.fullmatch(rf"{KEY}=.*", t))
    spans = re.findall(r"`([^`\n]+)`", _prose(text))
    settings.update(s for s in spans if re.fullmatch(rf"{KEY}=\S*", s))
    keys = {s.split("=", 1)[0] for s in settings}
    keys.update(s for s in spans if re.fullmatch(KEY, s))
    return keys, settings


def test_every_config_key_and_setting_the_readme_names_is_valid():
    keys, settings = _named_keys(_text())
    assert len(keys) >= 5 and settings, "the README names no config keys"
    known = _config_keys()
    assert not keys - known, f"not config keys: {sorted(keys - known)}"
    for setting in settings:
        if re.search(r"[<$…{]", setting):  # a placeholder such as data.root=/data/<set>
            continue
        try:
            load_config(None, [setting])
        except ConfigError as err:
            pytest.fail(f"the README's `{setting}` is refused: {err}")


def test_a_wrong_key_or_value_is_caught():
    keys, settings = _named_keys("Set `train.epoch=3` and `model.se.alpha` or `train.epochs=0`.")
    assert keys - _config_keys() == {"train.epoch"}
    assert settings == {"train.epoch=3", "train.epochs=0"}
    with pytest.raises(ConfigError):
        load_config(None, ["train.epochs=0"])


def test_the_python_examples_of_the_readme_run(monkeypatch):
    blocks = _blocks(_text(), "python")
    assert len(blocks) == 3, "the tour has three examples: the model, MHGAConv, the metrics"
    monkeypatch.chdir(ROOT)  # the examples use paths relative to the project folder
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def _local_links(path: Path) -> list[Path]:
    """Targets of the page's relative Markdown links (anchors dropped)."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _prose(path.read_text(encoding="utf-8")))
    return [(path.parent / t).resolve() for t in targets if "://" not in t]


PAGES = sorted([README, *DOCS.glob("*.md")])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_local_link_resolves(page):
    assert PAGES
    missing = [str(t.relative_to(ROOT)) for t in _local_links(page) if not t.exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_the_index_lists_every_docs_page():
    listed = {t for t in _local_links(DOCS / "index.md") if t.suffix == ".md"}
    pages = {p.resolve() for p in DOCS.glob("*.md")} - {(DOCS / "index.md").resolve()}
    assert not pages - listed, f"not in docs/index.md: {sorted(p.name for p in pages - listed)}"
    missing = sorted(p.name for p in listed if not p.exists())
    assert not missing, f"docs/index.md lists pages that do not exist: {missing}"


def _paragraphs(path: Path) -> list[str]:
    """The page's prose paragraphs and list items, whitespace-normalised (no code, no tables)."""
    out = []
    for chunk in re.split(r"\n\s*\n|\n(?=\s*[-*] )", _prose(path.read_text(encoding="utf-8"))):
        text = " ".join(chunk.split())
        if text and not text.startswith(("|", "#", "![")):
            out.append(text)
    return out


def test_no_paragraph_is_written_twice():
    seen: dict[str, str] = {}
    repeats = []
    for page in PAGES:
        for para in _paragraphs(page):
            if len(para) < 160:  # short lines (a link, a caption) may recur
                continue
            if para in seen:
                repeats.append(f"{page.name} repeats {seen[para]}: {para[:70]}…")
            seen.setdefault(para, page.name)
    assert len(seen) > 50, "too few paragraphs found: the splitter is broken"
    assert not repeats, "\n".join(repeats)


def test_every_setting_in_docs_names_a_config_key():
    """docs/ shows `key=value` settings (some deliberately refused ones): the keys must exist."""
    known = _config_keys()
    named = {
        page.name: {s.split("=", 1)[0] for s in _named_keys(page.read_text(encoding="utf-8"))[1]}
        for page in DOCS.glob("*.md")
    }
    assert sum(map(len, named.values())) >= 20, "docs/ names too few settings: parser broken?"
    unknown = {page: sorted(keys - known) for page, keys in named.items() if keys - known}
    assert not unknown, f"settings of keys the config does not have: {unknown}"
