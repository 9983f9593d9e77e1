"""``stop=``: completions that end where the user's unit of code ends.

The rules are checked on code as people write it (nested brackets, docstrings holding
dedented lines, ``else`` clauses, comment lines after a body) and on the default
model in completion mode after a ``def`` line, where without ``stop=`` it writes
comment lines and example calls until its budget ends. Outputs cut by a rule are what
``ast.parse`` takes, and no text before the cut is changed.
"""

from __future__ import annotations

import ast

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from plugin.errors import OptionError
from plugin.stopping import stop_rule

FUNCTION_BODY = "    return width * height\n\n\n# Example usage:\nprint(area(2, 3))\n"

CASES = [
    # (stop, prefix, output, kept)
    ("line", "", "foo(1)\nbar()\n", "foo(1)"),
    ("line", "x = ", "\n\nfoo(1)\nbar()", "\n\nfoo(1)"),
    ("statement", "", "x = f(1,\n      2)\ny = 3\n", "x = f(1,\n      2)\n"),
    ("statement", "x = ", "f(1)\ny = 3\n", "f(1)\n"),
    ("statement", "", "if a:\n    b()\nelse:\n    c()\n# done\nd()\n", "if a:\n    b()\nelse:\n    c()\n"),
    ("block", "def f():\n    x = 1\n", "    y = 2\n    # note\n\nprint(f())\n", "    y = 2\n"),
    ("block", "if a:\n", "    b()\n    c()\nd()\n", "    b()\n    c()\n"),
    ("function", "def area(width, height):\n", FUNCTION_BODY, "    return width * height\n"),
    (
        "function",
        "",
        "def area(w, h):\n    return w * h\n\nprint(area(1, 2))\n",
        "def area(w, h):\n    return w * h\n",
    ),
    (
        "function",
        "def f():\n",
        '    """Doc.\nnot code\n    """\n    return 1\nx = 2\n',
        '    """Doc.\nnot code\n    """\n    return 1\n',
    ),
    (
        "function",
        "class A:\n    def m(self):\n",
        "        return [\n1, 2]\n    def n(self):\n        pass\n",
        "        return [\n1, 2]\n",
    ),
    (
        "function",
        "",
        "@cache\ndef g():\n    pass\n@cache\ndef h():\n    pass\n",
        "@cache\ndef g():\n    pass\n",
    ),
    ("function", 'def area(w, h):\n    """Doc."""\n', "\n# Example usage:\nprint(area(1, 2))\n", ""),
    (
        "function",
        "",
        "def area():\n    return 1\n\n# Example usage:\n\n# Example usage:\n",
        "def area():\n    return 1\n",
    ),
    ("function", "def a():\n    return 1\n\n", "def b():\n    return 2\nb()\n", "def b():\n    return 2\n"),
    ("statement", "", "while x:\n    y()\n# then\n", "while x:\n    y()\n"),
    ("###", "", "abc###def", "abc"),
    (["\n\n", "line"], "", "a\n\nb", "a"),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_rules_end_where_they_say(case: int) -> None:
    stop, prefix, out, kept = CASES[case]
    rule = stop_rule(stop, prefix)
    cut = rule.cut(out)
    assert cut is not None and out[:cut] == kept
    assert rule.end_when()(out.encode())


def test_open_units_go_on() -> None:
    assert stop_rule("function", "def f():\n").cut("    x = 1\n    if x:\n        y = 2\n") is None
    assert stop_rule("statement", "").cut("for i in range(3):\n    print(i)\n") is None
    assert stop_rule("statement", "").cut("x = f(1,\n") is None
    assert stop_rule("line", "").cut("\n\nfoo(") is None
    assert stop_rule("block", "if a:\n").cut("    b()\n    # later\n") is None


@settings(max_examples=80, deadline=None)
@given(
    body=st.lists(
        st.sampled_from(["x = 1", "if x:\n        y = 2", "return x", "# note", "", "s = '''a\nb'''"]),
        min_size=1,
        max_size=5,
    ),
    after=st.sampled_from(["print(f())", "# Example usage:\nprint(f())", "def g():\n    pass", "x = f()"]),
)
def test_cut_functions_parse_and_keep_their_body(body: list[str], after: str) -> None:
    assume(any(line and not line.startswith("#") for line in body))  # a body with code
    prefix = "def f():\n"
    lines = "".join(f"    {line}\n" for line in body)
    written = lines + "\n" + after + "\n"
    cut = stop_rule("function", prefix).cut(written)
    assert cut is not None
    kept = written[:cut]
    assert lines.startswith(kept) and not lines[cut:].replace("# note", "").strip()
    tree = ast.parse(prefix + kept)
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.FunctionDef)


@pytest.mark.parametrize("bad", [["line", "block"], "", [], 5, ["ok", ""]])
def test_bad_stop_is_an_option_error(bad) -> None:
    with pytest.raises(OptionError, match="stop"):
        stop_rule(bad, None)


@pytest.mark.default_model
def test_default_model_completion_after_a_def_line_ends_with_the_function(default_model) -> None:
    """The issue's case: completion mode after ``def area(width, height):``; without
    ``stop=`` the model pads with comment lines and calls until ``max_new_tokens``."""
    from plugin.api import constrained_generate

    model, tokenizer = default_model
    prefix = "def area(width, height):\n    "
    prompt = prefix
    gen = constrained_generate(
        model, tokenizer, prompt, grammar="python", prefix=prefix, max_new_tokens=60, stop="function"
    )
    assert gen.finish_reason == "stop", gen.text
    tree = ast.parse(prefix + gen.text)
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.FunctionDef), gen.text
    assert gen.valid and gen.stats["stopped_by"] == "function"
    line = constrained_generate(
        model, tokenizer, prompt, grammar="python", prefix=prefix, max_new_tokens=30, stop="line"
    )
    assert "\n" not in line.text.strip("\n") and line.finish_reason == "stop", line.text


@pytest.mark.default_model
def test_a_compiled_builtin_grammar_keeps_its_default_stop(default_model) -> None:
    """``constraint=`` compiled from ``"python_function"`` ends with the function as
    ``grammar="python_function"`` does (the bench compiles once and passed it so)."""
    import grammars
    from plugin.api import _builtin_name, constrained_generate

    model, tokenizer = default_model
    prompt = "Write a Python function that returns the area of a rectangle.\n\n"
    named = constrained_generate(model, tokenizer, prompt, grammar="python_function", max_new_tokens=80)
    compiled = grammars.compile("python_function", tokenizer)
    given = constrained_generate(model, tokenizer, prompt, constraint=compiled, max_new_tokens=80)
    assert given.text == named.text and given.token_ids == named.token_ids
    assert given.stats.get("stopped_by") == named.stats.get("stopped_by") == "function"
    assert _builtin_name(compiled) == "python_function"
    assert _builtin_name(grammars.compile('start: "a"', tokenizer)) is None


def test_stop_is_refused_with_smc(tiny_model, default_tokenizer) -> None:
    from plugin.api import constrained_generate

    with pytest.raises(OptionError, match="stop="):
        constrained_generate(
            tiny_model, default_tokenizer, "x", regex="[ab]+", sampler="smc", stop="line", max_new_tokens=4
        )


def test_function_is_the_default_stop_after_a_def_line() -> None:
    from plugin.api import _one_function

    assert _one_function("python_function", None)
    assert _one_function("python", "import os\n\ndef area(w, h):\n")
    assert _one_function("python", "class A:\n    async def m(self):\n\n")
    assert not _one_function("python", "x = 1\n")
    assert not _one_function("python", None)
    assert not _one_function("sql", "def f():\n")
