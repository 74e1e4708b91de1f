"""The input checks' one home (:mod:`layerfuse.validation`): each failure names the parameter."""

from __future__ import annotations

import numpy as np
import pytest

from layerfuse.errors import LayerfuseError
from layerfuse.validation import as_labels, check_choice, check_texts, encode_labels, parse_list, validate_choices


def test_check_texts_accepts_lists_and_string_arrays():
    assert check_texts(["a", "b"]) == ["a", "b"]
    assert check_texts(np.array(["a", "b"])) == ["a", "b"]


@pytest.mark.parametrize("X, message", [
    ("one text", r"X must be a list of texts, not a single string"),
    (3, r"X must be a list of texts, got int"),
    (["a", 2], r"X\[1\] is int"),
    (["a", "  "], r"X\[1\] is empty"),
    ([], r"X is empty"),
])
def test_check_texts_names_the_bad_item(X, message):
    with pytest.raises(LayerfuseError, match=message):
        check_texts(X)


def test_encode_labels_sorts_classes_and_checks_the_length():
    classes, y = encode_labels(["pos", "neg", "pos"], 3)
    assert list(classes) == ["neg", "pos"] and y.tolist() == [1, 0, 1] and y.dtype == np.int64
    with pytest.raises(LayerfuseError, match=r"y must be a 1-D array with one label per row of X \(2\)"):
        encode_labels(["a", "b", "c"], 2)


def test_as_labels_takes_integer_ids_only():
    assert as_labels([0.0, 1.0], 2, "y").tolist() == [0, 1]
    with pytest.raises(LayerfuseError, match="y holds <U3 values"):
        as_labels(["neg", "pos"], 2, "y")
    with pytest.raises(LayerfuseError, match="n_classes=2"):
        as_labels([0, 2], 2, "y", n_classes=2)
    with pytest.raises(LayerfuseError, match="3 labels but the sources have 2 rows"):
        as_labels([0, 1, 1], 2, "y")


def test_parse_list_strips_dedupes_and_checks_choices():
    assert parse_list(" a, b ,a,", "models") == ["a", "b"]
    assert parse_list(["x", "y"], "heads", choices=["x", "y"]) == ["x", "y"]
    assert parse_list(None, "models") == []
    with pytest.raises(LayerfuseError, match="fusions is empty: choose one or more of concat, sum"):
        parse_list(" , ", "fusions", choices=["concat", "sum"])
    with pytest.raises(LayerfuseError, match="unknown fusion 'mean': choose from concat, sum"):
        parse_list("mean", "fusions", choices=["concat", "sum"], noun="fusion")


def test_check_choice_lists_every_choice():
    assert check_choice("a", ["a", "b"], "head") == "a"
    with pytest.raises(LayerfuseError, match="unknown head 'c': choose from a, b"):
        check_choice("c", ["a", "b"], "head")


def test_validate_choices_names_the_source_first():
    validate_choices(["concat"], ["mlp"], "auto", rule="cv", metric="accuracy")
    with pytest.raises(LayerfuseError, match=r"^run\.yaml: unknown fusion 'nope'"):
        validate_choices(["nope"], ["mlp"], "auto", source="run.yaml")
    with pytest.raises(LayerfuseError, match="unknown fusion.choose_metric 'recall'"):
        validate_choices(["concat"], ["mlp"], "auto", metric="recall")
