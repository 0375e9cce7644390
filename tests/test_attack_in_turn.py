"""`attacks.attack_in_turn`, the one ensemble orchestration: by hand with scripted attacks, and on
a linear model where FGSM's success has a closed form, through AutoAttack and
`tfrobust.evaluate`."""

import numpy as np
import pytest

import tfrobust
from tfrobust import attacks
from conftest import linear_classifier


def _scripted(breaks, calls):
    """`attack_batch` whose attack `i` fools exactly the examples in `breaks[i]`."""
    def attack_batch(index, indices, group):
        calls.append((index, group, indices.tolist()))
        return np.isin(indices, breaks[index]), 0.5 * len(indices)

    return attack_batch


# Ten examples; 2 and 7 are misclassified. Attack 0 breaks multiples of 3, attack 1 the even
# ones, attack 2 breaks 1 and 9 (9 is already broken by attack 0).
CANDIDATES = np.array([1, 1, 0, 1, 1, 1, 1, 0, 1, 1], bool)
BREAKS = [[0, 3, 6, 9], [0, 2, 4, 6, 8], [1, 9]]
BROKEN_BY = [0, 2, -2, 0, 1, -1, 0, -2, 1, 0]


def test_regrouped_batches_attack_only_the_examples_still_robust():
    calls = []
    counts = attacks.attack_in_turn(3, CANDIDATES, _scripted(BREAKS, calls), batch_size=3)
    assert counts.broken_by.tolist() == BROKEN_BY
    # Each turn regroups the examples still robust into full batches.
    assert calls == [(0, 0, [0, 1, 3]), (0, 1, [4, 5, 6]), (0, 2, [8, 9]),
                     (1, 0, [1, 4, 5]), (1, 1, [8]),
                     (2, 0, [1, 5])]
    assert counts.attacked.tolist() == [8, 4, 2]
    assert counts.broken.tolist() == [4, 2, 1]
    np.testing.assert_array_equal(counts.robust_accuracy_after, [0.4, 0.2, 0.1])
    np.testing.assert_array_equal(counts.seconds, [4.0, 2.0, 1.0])


def test_fixed_groups_go_through_every_attack_in_turn():
    calls, progress = [], []
    counts = attacks.attack_in_turn(
        3, CANDIDATES, _scripted(BREAKS, calls), batch_size=4, regroup=False, run_on_all={2},
        on_batch=lambda index, attacked, broken_by: progress.append((index, int(attacked[index]))))
    assert counts.broken_by.tolist() == BROKEN_BY
    # Groups {0, 1, 3, 4} and {5, 6, 8, 9}, one after the other; attack 2 runs on whole groups
    # but only breaks what is still robust (9 stays broken by attack 0).
    assert calls == [(0, 0, [0, 1, 3, 4]), (1, 0, [1, 4]), (2, 0, [0, 1, 3, 4]),
                     (0, 1, [5, 6, 8, 9]), (1, 1, [5, 8]), (2, 1, [5, 6, 8, 9])]
    assert counts.attacked.tolist() == [8, 4, 2]
    assert counts.broken.tolist() == [4, 2, 1]
    assert progress == [(0, 4), (1, 2), (2, 1), (0, 8), (1, 4), (2, 2)]


def test_a_fixed_group_with_nothing_left_is_not_attacked():
    calls = []
    counts = attacks.attack_in_turn(2, np.ones(4, bool), _scripted([[0, 1], [2]], calls),
                                    batch_size=2, regroup=False)
    # Attack 0 breaks all of group {0, 1}: attack 1 has nothing to attack there.
    assert calls == [(0, 0, [0, 1]), (0, 1, [2, 3]), (1, 1, [2, 3])]
    assert counts.broken_by.tolist() == [0, 0, 1, -1]
    assert counts.attacked.tolist() == [4, 2]
    np.testing.assert_array_equal(counts.robust_accuracy_after, [0.5, 0.25])


def test_run_on_all_needs_fixed_groups():
    with pytest.raises(ValueError, match=r"regroup=True, run_on_all=\[1\]"):
        attacks.attack_in_turn(2, CANDIDATES, _scripted(BREAKS, []), 4, run_on_all={1})


# -- a closed form: FGSM on a two-class linear model ---------------------------------------------
# logits = x @ W; for label y, one L-inf step of size e along sign(w_other - w_y) lowers the
# margin z_y - z_other by exactly e * ||w_other - w_y||_1 (no pixel reaches the range's ends).
W = np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.0], [0.0, 0.5]], "float32")
L1 = float(np.abs(W[:, 1] - W[:, 0]).sum())  # 5.0
E_SMALL, E_LARGE = 0.02, 0.06


def _closed_form_case():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.3, 0.7, size=(40, 2, 2, 1)).astype("float32")
    logits = x.reshape(40, 4) @ W
    y = np.argmax(logits, -1)
    y[:3] = 1 - y[:3]  # three misclassified examples
    margin = np.abs(logits[:, 0] - logits[:, 1])
    # No margin within 1e-3 of a threshold, so float rounding cannot decide an outcome.
    assert np.all(np.abs(margin[:, None] - np.array([E_SMALL, E_LARGE]) * L1) > 1e-3)
    expected = np.where(margin < E_SMALL * L1, 0, np.where(margin < E_LARGE * L1, 1, -1))
    expected[:3] = -2
    return x, y, expected


def _members():
    # PGD with one step of its whole budget from x is FGSM at E_SMALL, under another name.
    return [attacks.PGD(epsilon=E_SMALL, num_steps=1, step_size=E_SMALL, random_start=False),
            attacks.FGSM(epsilon=E_LARGE)]


def test_closed_form_broken_by_through_autoattack_and_evaluate():
    x, y, expected = _closed_form_case()
    assert sorted(np.unique(expected).tolist()) == [-2, -1, 0, 1]
    model = linear_classifier(W)
    result = attacks.AutoAttack(epsilon=E_LARGE, version="custom", attacks=_members()).run(
        model, x, y, batch_size=7, verbose=False)
    assert result.broken_by.tolist() == expected.tolist()
    assert result.attacked == [37, int(np.sum(expected >= 1) + np.sum(expected == -1))]
    assert result.robust_accuracy == np.mean(expected == -1)
    report = tfrobust.evaluate(model, (x, y), epsilon=E_LARGE, attacks=_members(),
                               sweep_attacks=(), checks=False, batch_size=7, verbose=False)
    names = {-2: "misclassified", -1: "robust", 0: "pgd-1", 1: "fgsm"}
    assert report.broken_by == [names[b] for b in expected.tolist()]
    assert [a["broken"] for a in report.attacks] == [int(np.sum(expected == 0)),
                                                     int(np.sum(expected == 1))]
    assert report.robust_accuracy == result.robust_accuracy
