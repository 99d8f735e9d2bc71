"""The prompt language's text side against the reference's test vectors (shared/reference/prompt-syntax.md)."""

from __future__ import annotations

import random

import pytest

from app.engine.prompt_parser import BREAK_WEIGHT, parse_emphasis, prompt_schedule

BREAK = ("BREAK", BREAK_WEIGHT)

EMPHASIS_VECTORS = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.573), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55), (", sun, ", 1.1),
      ("sky", 1.4641), (".", 1.1)]),
    ("a BREAK b", [("a", 1.0), BREAK, ("b", 1.0)]),
]


@pytest.mark.parametrize(("prompt", "expected"), EMPHASIS_VECTORS)
def test_emphasis_vectors(prompt: str, expected: list[tuple[str, float]]) -> None:
    got = parse_emphasis(prompt)
    assert [text for text, _ in got] == [text for text, _ in expected]
    assert [weight for _, weight in got] == pytest.approx([weight for _, weight in expected], abs=1e-9)


def test_emphasis_details() -> None:
    assert parse_emphasis("(x:1)") == [("x", 1.0)]
    assert parse_emphasis("((x))") == [("x", pytest.approx(1.21))]
    assert parse_emphasis("[x]") == [("x", pytest.approx(1 / 1.1))]
    assert parse_emphasis("( x : -0.5 )") == [(" x ", -0.5)]
    assert parse_emphasis("") == [("", 1.0)]
    assert parse_emphasis("a\\\\b") == [("a\\b", 1.0)]
    assert parse_emphasis("x:1.5) y") == [("x:1.5) y", 1.0)]  # no open bracket: text
    assert parse_emphasis("BREAKfast BREAK") == [("BREAKfast", 1.0), BREAK, ("", 1.0)]
    assert "".join(text for text, _ in parse_emphasis("a (red:1.3) [circle]")) == "a red circle"


def test_emphasis_never_raises_on_garbage() -> None:
    rng = random.Random(5)
    alphabet = "()[]:|\\ .1a,BREAK"
    for _ in range(2000):
        prompt = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        pieces = parse_emphasis(prompt)
        assert pieces and all(isinstance(text, str) for text, _ in pieces)
        schedule = prompt_schedule(prompt, 10)
        assert schedule[-1][0] == 10


SCHEDULE_VECTORS = [
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", [(step, "a" if step % 2 else "(b:1.1)") for step in range(1, 11)]),
    ("[fe|]male", [(step, "female" if step % 2 else "male") for step in range(1, 11)]),
    ("[fe|||]male", [(step, "female" if step % 4 == 1 else "male") for step in range(1, 11)]),
]


@pytest.mark.parametrize(("prompt", "expected"), SCHEDULE_VECTORS)
def test_schedule_vectors(prompt: str, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedule(prompt, 10) == expected


def test_schedule_edges() -> None:
    assert prompt_schedule("[from:to:0]", 20) == [(20, "to")]
    assert prompt_schedule("[from:to:25]", 20) == [(20, "from")]
    assert prompt_schedule("[from::4] x", 10) == [(4, "from x"), (10, " x")]
    assert prompt_schedule("[a:b:0.25]", 20) == [(5, "a"), (20, "b")]
    assert prompt_schedule("a | b", 10) == [(10, "a | b")]  # a bar outside brackets: used as written
    assert prompt_schedule("(x [a:b:2])", 4) == [(2, "(x a)"), (4, "(x b)")]  # schedules inside emphasis
    assert prompt_schedule("[a:b:x]", 4) == [(4, "[a:b:x]")]  # no number: literal text
    assert prompt_schedule("a\\\n[b:3]", 10) == [(10, "a\\\n[b:3]")]  # a backslash escapes no newline: unparsed
    assert prompt_schedule("a\\[b:3]", 10) == [(10, "a\\[b:3]")]  # an escaped bracket opens nothing
