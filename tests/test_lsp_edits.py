"""How the language server turns LSP changes into edits of a document's KV cache
(lsp_bridge/sessions.py): real lsprotocol change objects, UTF-16 positions, merging."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types as lsp

from lsp_bridge.sessions import DocumentSession, Edit, diff_edit, merged


def _apply(text: str, edits: list[Edit]) -> str:
    for e in edits:
        text = text[: e.start] + e.text + text[e.end :]
    return text


def _units(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def test_changes_become_edits_that_rebuild_the_text():
    rng = random.Random(11)
    text = "a = 1\nb = 'é😀'\n\n"
    session = DocumentSession("file:///x.py", "python")
    session.opened(text)
    start_text = text
    for _ in range(200):
        lines = text.split("\n")
        line = rng.randrange(len(lines))
        a = rng.randint(0, len(lines[line]))
        b = rng.randint(a, len(lines[line]))
        end_line = line
        if rng.random() < 0.2 and line + 1 < len(lines):  # a range over a line break
            end_line, b = line + 1, rng.randint(0, len(lines[line + 1]))
        insert = rng.choice(["", "z", "é", "\n", "ab\ncd", "😀", "  "])
        start = sum(len(s) + 1 for s in lines[:line])
        stop = sum(len(s) + 1 for s in lines[:end_line])
        change = lsp.TextDocumentContentChangePartial(
            range=lsp.Range(
                lsp.Position(line, _units(lines[line][:a])),
                lsp.Position(end_line, _units(lines[end_line][:b])),
            ),
            text=insert,
        )
        text = text[: start + a] + insert + text[stop + b :]
        session.changed([change], text)
    edits, current = session.take_edits()
    assert current == text and edits is not None
    assert _apply(start_text, edits) == text


def test_typing_merges_into_one_edit():
    edits = [Edit(5, 5, "p"), Edit(6, 6, "r"), Edit(7, 7, "i"), Edit(7, 8, ""), Edit(7, 7, "int")]
    assert merged(edits) == [Edit(5, 5, "print")]
    apart = [Edit(5, 5, "x"), Edit(50, 52, "")]
    assert merged(apart) == apart


def test_full_text_change_is_one_edit():
    session = DocumentSession("file:///x.py", "python")
    session.opened("def f():\n    return 1\n")
    session.changed(
        [lsp.TextDocumentContentChangeWholeDocument(text="def f():\n    return 42\n")],
        "def f():\n    return 42\n",
    )
    edits, _ = session.take_edits()
    assert edits == [Edit(20, 21, "42")]


def test_out_of_step_copy_asks_for_a_rebuild():
    session = DocumentSession("file:///x.py", "python")
    session.opened("abc")
    change = lsp.TextDocumentContentChangePartial(
        range=lsp.Range(lsp.Position(0, 1), lsp.Position(0, 2)), text="X"
    )
    session.changed([change], "something else")  # the workspace says otherwise
    edits, current = session.take_edits()
    assert edits is None and current == "something else"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_diff_edit_turns_old_into_new(old, new):
    found = diff_edit(old, new)
    assert (found is None) == (old == new)
    if found is not None:
        assert _apply(old, [found]) == new
