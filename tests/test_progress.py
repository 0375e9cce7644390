"""The evaluation's progress line: examples per attack and a time estimate, in closed form."""

import io

import pytest

from tfrobust.evaluation.progress import Progress


def test_the_estimate_uses_each_attacks_measured_pace_and_the_cost_of_the_others():
    progress = Progress(stream=io.StringIO(), interactive=False)
    progress.plan("apgd-ce", 100, cost=100)
    progress.plan("square-5000", 100, cost=5000)
    assert progress.seconds_left() is None  # nothing timed yet
    progress.advance("apgd-ce", 40, seconds=8.0)  # 0.2 s per example, 2 ms per pass
    assert progress.seconds_per_example("apgd-ce") == pytest.approx(0.2)
    assert progress.seconds_per_example("square-5000") == pytest.approx(5000 * 0.002)
    assert progress.seconds_left() == pytest.approx(60 * 0.2 + 100 * 10.0)
    # Examples from the cache count as done and do not change the pace.
    progress.advance("apgd-ce", 20)
    assert progress.seconds_per_example("apgd-ce") == pytest.approx(0.2)
    assert progress.seconds_left() == pytest.approx(40 * 0.2 + 100 * 10.0)


def test_finish_drops_the_examples_an_attack_never_needed():
    stream = io.StringIO()
    progress = Progress(stream=stream, interactive=False)
    progress.plan("apgd-ce", 100, cost=100)
    progress.plan("apgd-t", 100, cost=900)
    progress.advance("apgd-ce", 100, seconds=10.0)
    progress.advance("apgd-t", 30, seconds=27.0)  # the other 70 were broken already
    progress.finish("apgd-t")
    assert progress.seconds_left() == 0.0
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("apgd-ce") and "100 of 200 examples ( 50%)" in lines[0]
    assert lines[1].startswith("apgd-t") and "130 of 130 examples (100%)" in lines[1]
    assert "ETA 0:00" in lines[1] and "0.9 s/example" in lines[1]


def test_on_a_terminal_the_line_is_redrawn_in_place():
    stream = io.StringIO()
    progress = Progress(stream=stream, interactive=True, min_interval=0.0)
    progress.plan("pgd-20", 10, cost=20)
    progress.advance("pgd-20", 5, seconds=1.0)
    progress.advance("pgd-20", 5, seconds=1.0)
    progress.close()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "10 of 10 examples (100%)" in text.split("\r")[-1]
