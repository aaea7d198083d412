"""``LoopResult``, ``OnMax`` and the wire envelope (spec §6.7)."""

from __future__ import annotations

import pytest

from sayiir.loop_result import LoopResult, OnMax, loop_envelope


def test_again_and_done_carry_tag_and_value() -> None:
    again = LoopResult.again(1)
    done = LoopResult.done("x")
    assert (again.is_again, again.is_done, again.value) == (True, False, 1)
    assert (done.is_again, done.is_done, done.value) == (False, True, "x")


def test_to_dict_is_the_wire_format() -> None:
    assert LoopResult.again([1, 2]).to_dict() == {"_loop": "again", "value": [1, 2]}
    assert LoopResult.done(None).to_dict() == {"_loop": "done", "value": None}


def test_repr_names_the_constructor() -> None:
    assert repr(LoopResult.again(1)) == "LoopResult.again(1)"
    assert repr(LoopResult.done("a")) == "LoopResult.done('a')"


def test_constructor_takes_tag_and_value() -> None:
    assert LoopResult("done", 3).to_dict() == {"_loop": "done", "value": 3}


def test_constructor_rejects_unknown_tag() -> None:
    with pytest.raises(ValueError, match="'again' or 'done'"):
        LoopResult("stop", 1)


def test_uses_slots() -> None:
    result = LoopResult.again(1)
    assert not hasattr(result, "__dict__")
    with pytest.raises(AttributeError):
        result.other = 1  # type: ignore[attr-defined]


def test_is_generic() -> None:
    result: LoopResult[int] = LoopResult[int].again(2)
    assert result.value == 2


def _equal(left: object, right: object) -> bool:
    return left == right


def test_on_max_is_a_str_enum_with_two_members() -> None:
    assert list(OnMax) == [OnMax.FAIL, OnMax.EXIT_WITH_LAST]
    assert _equal(OnMax.FAIL, "fail")
    assert _equal(OnMax.EXIT_WITH_LAST, "exit_with_last")
    assert isinstance(OnMax.FAIL, str)
    assert OnMax("exit_with_last") is OnMax.EXIT_WITH_LAST
    assert str(OnMax.FAIL) == "fail"


def test_loop_envelope_converts_loop_results_only() -> None:
    assert loop_envelope(LoopResult.done(5)) == {"_loop": "done", "value": 5}
    wire = {"_loop": "again", "value": 1}
    assert loop_envelope(wire) is wire
    # Anything else is left for the engine to reject with the reference's message.
    assert loop_envelope(7) == 7
