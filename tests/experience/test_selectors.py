"""Selectors on hand-made (P, k) score matrices: k = 2 and k > 2, ties among the best (lowest index wins),
prompts whose scores all tie, and the registry's names and errors."""

from __future__ import annotations

import pytest
import torch

from alignment.experience.selectors import SELECTORS, Selection, best_or_worst

# prompt 0: a clear best (1) and worst (0); prompt 1: all tied; prompt 2: best tied at 1 and 3, worst tied
# at 0 and 2 -> lowest indices 1 and 0
SCORES = torch.tensor([[-1.0, 4.0, 2.0, 3.0], [0.5, 0.5, 0.5, 0.5], [-2.0, 7.0, -2.0, 7.0]])


def test_registered_names():
    assert SELECTORS.names() == ["all", "best_of_n", "best_worst", "worst_of_n"]
    with pytest.raises(KeyError, match="did you mean 'best_worst'"):
        SELECTORS.get("best_wrst")


def test_best_worst_with_two_samples():
    rows, index, skipped = SELECTORS.get("best_worst")(torch.tensor([[0.2, 0.7], [1.0, 1.0], [3.0, -1.0]]))
    assert rows.tolist() == [0, 2] and index.tolist() == [[1, 0], [0, 1]] and skipped == 1


def test_best_worst_with_k_samples_skips_all_tied_prompts_and_breaks_ties_to_the_lowest_index():
    selection = SELECTORS.get("best_worst")(SCORES)
    assert selection.rows.tolist() == [0, 2]
    assert selection.index.tolist() == [[1, 0], [1, 0]]
    assert selection.skipped == 1
    assert selection.gather(SCORES).tolist() == [[4.0, -1.0], [7.0, -2.0]]


def test_all_keeps_every_sample_in_order_ties_included():
    selection = SELECTORS.get("all")(SCORES)
    assert selection.rows.tolist() == [0, 1, 2] and selection.skipped == 0
    assert selection.index.tolist() == [[0, 1, 2, 3]] * 3
    assert torch.equal(selection.gather(SCORES), SCORES)


@pytest.mark.parametrize(
    "name, index, values",
    [("best_of_n", [1, 0, 1], [4.0, 0.5, 7.0]), ("worst_of_n", [0, 0, 0], [-1.0, 0.5, -2.0])],
)
def test_best_and_worst_of_n_keep_one_sample_per_prompt(name, index, values):
    selection = SELECTORS.get(name)(SCORES)
    assert selection.rows.tolist() == [0, 1, 2] and selection.skipped == 0
    assert selection.index.tolist() == [[i] for i in index]
    assert selection.gather(SCORES)[:, 0].tolist() == values
    assert best_or_worst(worst=name == "worst_of_n") is SELECTORS.get(name)


def test_worst_of_n_tie_goes_to_the_lowest_index_too():
    assert SELECTORS.get("worst_of_n")(torch.tensor([[3.0, 1.0, 1.0, 2.0]])).index.tolist() == [[1]]


def test_gather_takes_any_per_sample_values():
    """The same pick applies to other (P, k) columns, e.g. behaviour log-probs."""
    selection = Selection(torch.tensor([2, 0]), torch.tensor([[3, 0], [1, 2]]), 1)
    values = torch.arange(12.0).reshape(3, 4)
    assert selection.gather(values).tolist() == [[11.0, 8.0], [1.0, 2.0]]


@pytest.mark.parametrize(
    "name, scores",
    [("best_worst", torch.zeros(3, 1)), ("best_worst", torch.zeros(3)), ("best_of_n", torch.zeros(2, 0))],
)
def test_bad_shapes_are_refused(name, scores):
    with pytest.raises(ValueError, match="need \\(P, k >= "):
        SELECTORS.get(name)(scores)
