"""sriovdp.workers.codelayout: functions get fresh copies of their code and behave the same."""

from __future__ import annotations

import types
from typing import Any

from sriovdp.workers import codelayout

_SOURCE = """
RATE = 3

def scale(x, *, by=RATE):
    return [v * by for v in x]

def make_counter(start):
    count = start
    def bump(step=1):
        nonlocal count
        count += step
        return count
    return bump

class Pool:
    def names(self, prefix):
        return sorted(f"{prefix}{n}" for n in ("b", "a"))
"""


def _namespace() -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "codelayout_sample"}
    exec(compile(_SOURCE, "<codelayout-sample>", "exec"), ns)
    return ns


def _nested(code: types.CodeType) -> list[types.CodeType]:
    return [c for c in code.co_consts if isinstance(c, types.CodeType)]


def test_relocated_functions_run_fresh_copies_and_answer_the_same() -> None:
    ns = _namespace()
    scale, make_counter, names = ns["scale"], ns["make_counter"], ns["Pool"].names
    before = {f: f.__code__ for f in (scale, make_counter, names)}
    counter = make_counter(10)  # a closure made before the move keeps its own code

    moved = codelayout.relocate(list(before.values()))

    assert moved == 3
    for function, old in before.items():
        assert function.__code__ is not old
        assert function.__code__.co_code == old.co_code
        assert function.__code__.co_qualname == old.co_qualname
    assert scale([1, 2]) == [3, 6] and scale([1], by=5) == [5]
    assert ns["Pool"]().names("p") == ["pa", "pb"]
    assert counter() == 11 and counter(4) == 15
    assert make_counter(0)(2) == 2


def test_nested_code_is_copied_with_its_enclosing_code() -> None:
    ns = _namespace()
    outer = ns["make_counter"]
    inner = _nested(outer.__code__)[0]  # bump's code, in make_counter's constants

    codelayout.relocate([outer.__code__, inner])

    new_inner = _nested(outer.__code__)[0]
    assert new_inner is not inner and new_inner.co_code == inner.co_code
    assert outer(1).__code__ is new_inner  # closures made from now on run the copy


def test_code_not_asked_for_stays_where_it_is() -> None:
    ns = _namespace()
    scale, names = ns["scale"], ns["Pool"].names
    kept, comprehension = names.__code__, _nested(scale.__code__)[0]

    codelayout.relocate([scale.__code__])

    assert names.__code__ is kept
    assert _nested(scale.__code__)[0] is comprehension  # not asked for: shared by the copy


def test_code_objects_finds_nested_code_by_id_and_skips_unknown_ids() -> None:
    ns = _namespace()
    outer = ns["make_counter"].__code__
    inner = _nested(outer)[0]

    found = codelayout.code_objects([id(inner), 1, id(outer)])

    assert found == [inner, outer]
