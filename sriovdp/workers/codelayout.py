"""Lays out the code a worker runs on pages of its own, before the zygote forks (zygote process).

A forked worker copies each page it writes to, and CPython 3.11 writes to every code object it
runs: each call takes a reference to the function's code, and the first calls count up a warm-up
counter and then rewrite the bytecode in place. Code objects are allocated when their module is
imported, so the ~800 a worker runs are scattered among the ~15,000 the zygote loaded, mostly one
to a page: each worker copied some 500 pages (2 MB) only for them.

:func:`relocate` gives each of those functions a fresh copy of its code object (``code.replace()``:
the same bytecode, constants, names and line table; a new object), allocated one after the other
in the order the rehearsal first ran them, so they fill few pages. The function objects stay
where they are, and everything that refers to them sees the new code at its next call. Copies of
nested code objects (closures, comprehensions) replace the originals in their enclosing code's
constants, so functions made later get them too. The old code objects are freed.

Measured on 8 pools x 64 VFs: the process tree's PSS fell by about 7 MB (docs/benchmarks.md).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from types import CodeType, FunctionType


def code_objects(ids: Sequence[int]) -> list[CodeType]:
    """The code objects with these ``id()`` values (in that order) among the code of every
    function alive here and the code nested in it; ids that name none are skipped."""
    found: dict[int, CodeType] = {}

    def walk(code: CodeType) -> None:
        found[id(code)] = code
        for const in code.co_consts:
            if isinstance(const, CodeType):
                walk(const)

    for obj in gc.get_objects():
        if isinstance(obj, FunctionType):
            walk(obj.__code__)
    return [found[i] for i in ids if i in found]


def relocate(hot: Sequence[CodeType]) -> int:
    """Moves the code of every function whose code object is in ``hot`` (in that order) to fresh
    copies; returns how many functions now run a copy. Call it before ``gc.freeze()``: frozen
    objects are invisible to ``gc.get_objects()``."""
    wanted = {id(code): code for code in hot}
    users: dict[int, list[FunctionType]] = {}
    for obj in gc.get_objects():
        if isinstance(obj, FunctionType) and id(obj.__code__) in wanted:
            users.setdefault(id(obj.__code__), []).append(obj)
    copies: dict[int, CodeType] = {}

    def copy(code: CodeType) -> CodeType:
        done = copies.get(id(code))
        if done is None:
            if any(isinstance(c, CodeType) and id(c) in wanted for c in code.co_consts):
                consts = tuple(
                    copy(c) if isinstance(c, CodeType) and id(c) in wanted else c
                    for c in code.co_consts
                )
                done = code.replace(co_consts=consts)
            else:
                done = code.replace()
            copies[id(code)] = done
        return done

    moved = 0
    for code in hot:
        for function in users.get(id(code), ()):
            function.__code__ = copy(code)
            moved += 1
    return moved
