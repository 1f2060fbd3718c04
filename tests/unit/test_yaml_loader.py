"""`argus.spec.loader.load_yaml_mapping` builds plain documents from libyaml's nodes itself.

Its answer, value or error, must be exactly what PyYAML's safe loader and `tree_problem` give:
checked here on hand-picked documents that take each branch (aliases, merge keys, every plain
tag, explicit tags, complex keys, nesting at and past the limit, surrogates, several documents,
syntax errors) and on a few thousand random ones.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import yaml

from argus.spec import loader
from argus.spec.errors import SpecError

HAND_PICKED = [
    "a: 1",
    "a: &x {b: 1}\nc: *x",
    "a: &x [1]\nc: *x",
    "a: &s text\nb: *s",
    "base: &b {x: 1}\no: {<<: *b, y: 2}",
    "o: {<<: {x: 1}, y: 2}",
    "s: !!set {a, b}",
    "o: !!omap [{a: 1}, {b: 2}]",
    "p: !!pairs [{a: 1}, {a: 2}]",
    "x: !custom 1",
    "x: !!python/object:os.system 1",
    "n: [0x1F, 0o17, 017, 1_000, +5, -0, 0b101, 1:30, 190:20:30]",
    "f: [.inf, -.inf, .nan, 1e3, 1.5e-3, 685.230_15e+03, 190:20:30.15]",
    "b: [yes, no, on, off, true, False, y, n, Y]",
    'z: [~, null, Null, ""]',
    "t: [2001-12-14t21:59:43.10-05:00, 2002-12-14, 2001-12-14 21:59:43.10 -5]",
    "bin: !!binary aGVsbG8=",
    "[a, b]: 1",
    "{a: 1}: 2",
    "? [x]\n: 1",
    "a: 1\na: 2",
    's: "\\ud800"',
    '"\\udc00": 1',
    'ok: fine\nbad: ["\\ud83d"]',
    "- 1",
    "plain",
    "",
    "# only a comment",
    "a: !!str 1",
    'a: !!int "12"',
    'a: !!float "1"',
    "a: !!map {b: 1}",
    "a: !!seq [1]",
    "a: ? complex",
    "a: |\n  multi\n  line",
    "1: one\n2.5: two\nnull: three\ntrue: four",
    "a: 1\n---\nb: 2",
    "a: [1, 2",
    "a: b: c",
    "a: 'unterminated",
    "a: ${shared_root}/x",
    # Two problems, or one a scalar's constructor finds: reported as PyYAML reports them.
    "a:\n  b: !!binary a\nc: !!binary b\n",
    "<<: !!binary a\n",
    "!foo x: !!binary a\n",
    "a: !!binary a\n<<: 5\n",
    "x: [2001-13-45]\n[1]: 2\n",
    "!foo y: !!bool q\n",
    "a: 2024-02-30",
    "a: !!bool maybe",
    "a: !!int x",
    "a: " + "9" * 5000,
    "a: !!int",
    "a: !!float ''",
    "a: [!!int -_]",
    "a: !!timestamp x",
    "a: 1" + ":59" * 2000,
    "a: " + "[" * 31 + "]" * 31,
    "a: " + "[" * 32 + "]" * 32,
    "a: " + "[" * 40 + "]" * 40,
    "a: " + "[" * 3000 + "]" * 3000,
    "a:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(35)) + "  " * 36 + "v",
]


def reference(text: str) -> tuple[str, Any]:
    """What the loader answered before it built documents itself."""
    try:
        data = yaml.load(text, Loader=loader._LOADER)
    except RecursionError:
        return "error", f"nested deeper than {loader.MAX_DEPTH} levels"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return "error", f"{where}{getattr(exc, 'problem', None) or exc}"
    if data is None:
        data = {}
    problem = loader.tree_problem(data)
    if problem:
        return "error", problem
    if not isinstance(data, dict):
        return "error", f"must be a mapping, got {type(data).__name__}"
    return "value", data


def answer(text: str) -> tuple[str, Any]:
    try:
        return "value", loader.load_yaml_mapping(text, "t")
    except SpecError as exc:
        (problem,) = exc.problems
        return "error", problem.reason


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to itself and types compared too (1 is not 1.0 nor True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return a == b


@pytest.fixture(params=["libyaml", "pure"])
def which_loader(request, monkeypatch):
    """Both safe loaders: libyaml's, and PyYAML's own (used where PyYAML has no libyaml; it
    lets `\\ud800` escapes through, which libyaml refuses)."""
    if request.param == "pure":
        monkeypatch.setattr(loader, "_LOADER", loader.loader_class(yaml.SafeLoader))
    return request.param


@pytest.mark.parametrize("text", HAND_PICKED)
def test_hand_picked_documents_load_as_the_safe_loader_loads_them(text, which_loader):
    assert same(answer(text), reference(text)), text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("workload: ppo\nstarted: 2024-02-30\n", "line 2, column 10: '2024-02-30' is not a valid timestamp"),
        ("a: !!bool maybe", "line 1, column 4: 'maybe' is not a valid bool"),
        ("a: [1, !!int '']", "line 1, column 8: '' is not a valid int"),
        ("a: !!float _", "line 1, column 4: '_' is not a valid float"),
        ("a: 1" + ":59" * 2000, f"line 1, column 4: int value of more than {loader.MAX_SCALAR_CHARS} characters"),
    ],
)
def test_a_value_not_of_its_type_is_a_spec_error_at_the_value(text, reason, which_loader):
    """PyYAML's scalar constructors raise ValueError, KeyError, IndexError...: each is a 400
    that says where, never a 500; base-60 ints (quadratic to read) are refused when long."""
    with pytest.raises(SpecError) as caught:
        loader.load_yaml_mapping(text, "task spec")
    assert [(p.field, p.reason) for p in caught.value.problems] == [("<yaml>", reason)]


def test_a_plain_task_spec_is_built_without_the_generic_constructor(monkeypatch):
    def refuse(*_: Any) -> Any:
        raise AssertionError("the generic constructor ran")

    monkeypatch.setattr(loader._LOADER, "construct_document", refuse)
    text = "workload: ppo\nnnodes: 1\nenv_vars:\n  A: '0.2'\noverrides:\n- data.train_batch_size=8\n"
    assert loader.load_yaml_mapping(text, "t") == {
        "workload": "ppo",
        "nnodes": 1,
        "env_vars": {"A": "0.2"},
        "overrides": ["data.train_batch_size=8"],
    }
    with pytest.raises(AssertionError, match="generic constructor"):
        loader.load_yaml_mapping("a: &x [1]\nb: *x\n", "t")  # an alias goes the generic way


SCALARS = ["yes", "0x10", "1e3", "~", "2020-01-01", "a: b", "- x", "'q'", "é", "\x85", "\u2028", "", " "]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 4 or r < 0.4:
        return rng.choice(
            [rng.randint(-(10**6), 10**6), rng.random(), f"s{rng.random()}", None, True, rng.choice(SCALARS)]
        )
    if r < 0.7:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = [f"k{rng.random()}" if rng.random() < 0.8 else rng.randint(0, 9) for _ in range(rng.randint(0, 4))]
    return {k: random_value(rng, depth + 1) for k in keys}


def test_random_documents_load_as_the_safe_loader_loads_them(which_loader):
    rng = random.Random(15)
    for _ in range(2000 if which_loader == "libyaml" else 300):
        text = yaml.safe_dump(
            {"k": random_value(rng)},
            default_flow_style=rng.choice([None, True, False]),
            allow_unicode=rng.random() < 0.5,
        )
        assert same(answer(text), reference(text)), text
