"""The data-set table: every module answers the same calls, checked against walks of the trees."""

from __future__ import annotations

import inspect
import os
import types
import typing
from pathlib import Path

import pytest

from csetgraph.data import DATASETS, DatasetModule, get_dataset
from csetgraph.data.records import DIRECTIONS, MODALITIES
from csetgraph.errors import ConfigError

NAMES = list(DATASETS)


def _walk(root: Path, top: str, pids: set[int]) -> set[str]:
    """Image files under ``root/top*/cam*/<pid:04d>/`` for the given pids."""
    out = set()
    for folder, _, names in os.walk(root):
        parts = Path(folder).relative_to(root).parts
        if parts and parts[0].startswith(top) and parts[-1].isdigit() and int(parts[-1]) in pids:
            out.update(str(Path(folder) / n) for n in names)
    return out


def _test_images(name: str, root: Path, trial: int) -> set[str]:
    """Every test image, found without the readers: the id/idx files and a folder walk."""
    if name == "sysu_mm01":
        ids = {int(x) for x in (root / "exp" / "test_id.txt").read_text().split(",")}
        return _walk(root, "cam", ids)
    if name == "llcm":
        ids = {int(x) for x in (root / "idx" / "test_id.txt").read_text().split(",")}
        return _walk(root, "test_", ids)
    lines = []
    for side in ("visible", "thermal"):
        lines += (root / "idx" / f"test_{side}_{trial}.txt").read_text().split("\n")
    return {str(root / line.split()[0]) for line in lines if line.strip()}


def test_the_table_lists_the_three_data_sets():
    assert NAMES == ["sysu_mm01", "regdb", "llcm"]
    assert {get_dataset(n).PROTOCOL for n in NAMES} == {"sysu", "regdb", "llcm"}
    with pytest.raises(ConfigError, match="one of sysu_mm01, regdb, llcm, got 'market'"):
        get_dataset("market")


@pytest.mark.parametrize("name", NAMES)
def test_every_module_answers_the_same_calls(name, roots):
    ds, root = get_dataset(name), roots[name]
    assert ds.check_root(str(root)) == root
    assert ds.DIRECTIONS and set(ds.DIRECTIONS) <= set(DIRECTIONS)
    assert ds.SPLITS == ("train", "val", "test")
    everything = ds.all_records(root, split="test", trial=2)
    assert set(everything) == set(MODALITIES)
    assert {r.modality for m in MODALITIES for r in everything[m]} == set(MODALITIES)
    assert all(r.modality == m for m in MODALITIES for r in everything[m])
    assert {r.path for m in MODALITIES for r in everything[m]} == _test_images(name, root, 2)
    # The protocol's trials: gallery draws, or RegDB's own split only.
    trials = ds.eval_trials(num_trials=3, data_trial=2)
    assert trials == ([2] if name == "regdb" else [0, 1, 2])
    for direction in ds.DIRECTIONS:
        q_mod, g_mod = DIRECTIONS[direction]
        for mode in ds.MODES:
            query, gallery = ds.test_split(
                root, split="test", direction=direction, trial=trials[0], mode=mode
            )
            assert {r.modality for r in query} == {q_mod}
            assert {r.modality for r in gallery} == {g_mod}
            assert [r.path for r in query] == [r.path for r in everything[q_mod]]
            assert {r.path for r in gallery} <= {r.path for r in everything[g_mod]}
    assert ds.MODES == (("all", "indoor") if name == "sysu_mm01" else ("all",))
    if name != "sysu_mm01":
        with pytest.raises(ValueError, match="search mode 'all' only"):
            ds.test_split(root, split="test", direction=ds.DIRECTIONS[0], mode="indoor")
    train = ds.train_records(root, split="train+val", trial=2)
    parts = [ds.all_records(root, split=s, trial=2) for s in ("train", "val")]
    assert sorted(r.path for r in train) == sorted(
        r.path for part in parts for m in MODALITIES for r in part[m]
    )


def test_sysu_has_infrared_queries_only(sysu_root):
    with pytest.raises(ValueError, match="infrared queries only"):
        get_dataset("sysu_mm01").test_split(sysu_root, direction="v2i")


def test_llcm_direction_and_query_modality_agree(llcm_root):
    llcm = get_dataset("llcm")
    assert llcm.test_split(llcm_root, direction="v2i", trial=1) == llcm.test_split(
        llcm_root, "vis", 1
    )
    with pytest.raises(ValueError, match="direction must be one of"):
        llcm.test_split(llcm_root, direction="I2V")


# ------------------------------------------------------------------ the written contract


def _contract() -> tuple[dict[str, object], dict[str, inspect.Signature]]:
    """The constants (name -> type) and the functions (name -> signature without ``self``)."""
    constants = typing.get_type_hints(DatasetModule)
    functions = {}
    for name, member in vars(DatasetModule).items():
        if inspect.isfunction(member) and not name.startswith("_"):
            sig = inspect.signature(member)
            functions[name] = sig.replace(parameters=list(sig.parameters.values())[1:])
    return constants, functions


def contract_violations(module) -> list[str]:
    """What ``module`` lacks to be called as :class:`DatasetModule` writes the calls.

    Every argument of the contract must be accepted by its name (a positional one at its
    place), a contract default must be the module's default, and an argument the contract
    does not have must have a default (or be ``**params``).
    """
    problems = []
    constants, functions = _contract()
    for name, hint in constants.items():
        value = getattr(module, name, None)
        if value is None:
            problems.append(f"{name} is missing")
        elif typing.get_origin(hint) is tuple:
            if not (isinstance(value, tuple) and value and all(isinstance(v, str) for v in value)):
                problems.append(f"{name} must be a non-empty tuple of str, got {value!r}")
        elif not isinstance(value, hint):
            problems.append(f"{name} must be {hint.__name__}, got {value!r}")
    for name, wanted in functions.items():
        func = getattr(module, name, None)
        if not callable(func):
            problems.append(f"{name}() is missing")
            continue
        have = inspect.signature(func).parameters
        var_kw = any(p.kind is p.VAR_KEYWORD for p in have.values())
        positional = [
            p for p in have.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        for i, arg in enumerate(wanted.parameters.values()):
            if arg.kind is arg.VAR_KEYWORD:
                if not var_kw:
                    problems.append(f"{name}() must take **{arg.name}")
                continue
            got = have.get(arg.name)
            if arg.kind is arg.POSITIONAL_OR_KEYWORD:
                if i >= len(positional) or positional[i].name != arg.name:
                    problems.append(f"{name}() must take {arg.name!r} as argument {i + 1}")
                continue
            if got is None or got.kind is got.POSITIONAL_ONLY:
                problems.append(f"{name}() must accept the keyword {arg.name!r}")
            elif arg.default is not arg.empty and got.default != arg.default:
                problems.append(
                    f"{name}(): {arg.name} must default to {arg.default!r}, got {got.default!r}"
                )
        for extra in have.values():
            extra_needed = extra.default is extra.empty and extra.kind not in (
                extra.VAR_KEYWORD,
                extra.VAR_POSITIONAL,
            )
            if extra.name not in wanted.parameters and extra_needed:
                problems.append(f"{name}() needs {extra.name!r}, which the contract does not give")
    return problems


def test_the_contract_names_the_calls_the_table_serves():
    constants, functions = _contract()
    assert set(constants) == {"NAME", "PROTOCOL", "DIRECTIONS", "MODES", "SPLITS"}
    assert set(functions) == {
        "check_root",
        "train_records",
        "test_split",
        "eval_trials",
        "all_records",
        "ids_without_images",
        "index_files",
        "generate",
    }
    # keyword-only after root: the table is never called with the modules' positional orders
    for name in ("train_records", "test_split", "eval_trials", "all_records", "ids_without_images"):
        kinds = [p.kind for p in functions[name].parameters.values() if p.name != "root"]
        assert kinds and set(kinds) == {inspect.Parameter.KEYWORD_ONLY}, name


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_module_fulfils_the_contract(name):
    assert NAMES, "the table is empty"
    assert contract_violations(DATASETS[name]) == []


def test_the_contract_check_finds_what_a_new_module_gets_wrong():
    """A hand-made module with the usual mistakes: each is named, nothing else is."""
    fake = types.ModuleType("fake")
    for key in ("NAME", "PROTOCOL"):
        setattr(fake, key, "x")
    fake.DIRECTIONS, fake.MODES, fake.SPLITS = ("i2v",), (), ("train", "val", "test")
    fake.check_root = lambda root: Path(root)
    fake.train_records = lambda root, trial, split="train+val": []  # fine: named, any order
    fake.test_split = lambda root, split, direction, trial, shots: ([], [])  # no mode; shots
    fake.eval_trials = lambda num_trials, data_trial=2: []  # wrong default
    fake.all_records = lambda split, trial: {}  # root missing: "split" sits at place 1
    fake.ids_without_images = lambda root, split, trial=1: []  # fine: a default is allowed
    fake.index_files = lambda root: []
    assert contract_violations(fake) == [
        "MODES must be a non-empty tuple of str, got ()",
        "test_split() must accept the keyword 'mode'",
        "test_split() needs 'shots', which the contract does not give",
        "eval_trials(): data_trial must default to 1, got 2",
        "all_records() must take 'root' as argument 1",
        "generate() is missing",
    ]
