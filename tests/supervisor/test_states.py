"""The state table: every state has its exits, the choke point refuses the rest."""

from __future__ import annotations

import itertools

import pytest

from sriovdp.supervisor.states import (
    AT_REST,
    HAS_PROCESS,
    TRANSITIONS,
    ChildState,
    InvalidTransition,
    check_transition,
)

S = ChildState


def test_every_state_has_a_row_and_a_way_out() -> None:
    assert set(TRANSITIONS) == set(ChildState)
    for state, targets in TRANSITIONS.items():
        assert targets, state
        assert state not in targets  # no self-loops: a "change" must change something


@pytest.mark.parametrize(("old", "new"), list(itertools.product(ChildState, ChildState)))
def test_check_transition_follows_the_table(old: ChildState, new: ChildState) -> None:
    if new in TRANSITIONS[old]:
        check_transition(old, new)
    else:
        with pytest.raises(InvalidTransition, match=f"{old.name} -> {new.name}"):
            check_transition(old, new)


def test_running_is_reached_only_from_starting() -> None:
    assert [s for s, t in TRANSITIONS.items() if S.RUNNING in t] == [S.STARTING]


def test_stopping_only_ends_stopped_and_groups_are_disjoint() -> None:
    assert TRANSITIONS[S.STOPPING] == {S.STOPPED}
    assert not HAS_PROCESS & AT_REST
