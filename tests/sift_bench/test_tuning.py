"""The edge rule (sift_bench.tuning): which choices are edges, which grids are too small to say, and the point
an extension adds."""

from __future__ import annotations

import pytest

from sift_bench.tuning import axis_marks, mark_text, next_value

LRS = [{"learning_rate": v} for v in (1e-4, 3e-4, 1e-3)]


@pytest.mark.parametrize(("chosen", "state"), [(1e-4, "low"), (3e-4, "interior"), (1e-3, "high")])
def test_edges_of_a_three_point_axis(chosen: float, state: str) -> None:
    (mark,) = axis_marks(LRS, {"learning_rate": chosen})
    assert mark.state == state and mark.values == (1e-4, 3e-4, 1e-3) and mark.edge == (state != "interior")


def test_two_points_are_untuned_and_strings_are_categorical() -> None:
    marks = axis_marks([{"learning_rate": 1e-3, "kind": "a"}, {"learning_rate": 3e-3, "kind": "b"}],
                       {"learning_rate": 1e-3, "kind": "a"})  # fmt: skip
    assert [m.state for m in marks] == ["untuned", "categorical"]
    assert mark_text(marks) == "lr untuned"
    with pytest.raises(ValueError, match="not chosen at an edge"):
        next_value(marks[0])


def test_next_value_steps_at_the_outermost_ratio_or_difference() -> None:
    (high,) = axis_marks(LRS, {"learning_rate": 1e-3})
    (low,) = axis_marks(LRS, {"learning_rate": 1e-4})
    assert next_value(high) == 3.33e-3 and next_value(low) == 3.33e-5  # rounded: stable trial ids
    (bs,) = axis_marks([{"batch_size": b} for b in (8, 16, 32)], {"batch_size": 32})
    assert next_value(bs) == 64 and isinstance(next_value(bs), int)
    (wd,) = axis_marks([{"weight_decay": w} for w in (0.0, 0.01, 0.02)], {"weight_decay": 0.0})
    assert next_value(wd) == pytest.approx(-0.01)  # not all positive: the difference, not the ratio
    # An extended axis is judged on every value tried: the old edge is now inside.
    (after,) = axis_marks([*LRS, {"learning_rate": 3.33e-3}], {"learning_rate": 1e-3})
    assert after.state == "interior" and mark_text([after], extended=1) == "ext 1"
