"""The Python monitor on a real project on disk: jedi, tree-sitter, the real tokenizer."""

from __future__ import annotations

import gzip
import json
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monitors import MonitoredConstraint, PythonMonitor, build_monitors
from monitors.python_lexer import LexState, scan
from plugin.errors import OptionError
from tests.conftest import shared_path

# jedi's first inference in a fresh environment, on a busy 2-core machine, can take
# longer than the 5 s default; a timed-out trigger is (correctly) left unrestricted, which
# is not what these tests look at.
COLD_JEDI = 120.0

SHAPES = '''
class Rect:
    """A rectangle."""

    def __init__(self, width, height):
        self.width = width
        self.height = height

    def area(self):
        return self.width * self.height

    def scaled(self, factor):
        return Rect(self.width * factor, self.height * factor)
'''
MAIN = """import os
from geometry.shapes import Rect


def total_area(rects):
    first = Rect(1, 2)
    return first."""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "geometry").mkdir()
    (root / "geometry" / "__init__.py").write_text("")
    (root / "geometry" / "shapes.py").write_text(SHAPES)
    (root / "geometry" / "ops.py").write_text("def grow(rect, by, *, times=1):\n    return rect\n")
    (root / "main.py").write_text(MAIN + "area()\n")
    return root


@pytest.fixture(scope="module")
def monitor(project) -> PythonMonitor:
    return PythonMonitor(project, project / "main.py", suffix="\n", timeout=COLD_JEDI)


def names(monitor: PythonMonitor, text: str):
    r = monitor.restriction(text.encode())
    return None if r is None else {n.decode() for n in r.names}


def test_dereference_lists_attributes_defined_in_another_file(monitor):
    found = names(monitor, MAIN)
    assert {"area", "scaled", "width", "height"} <= found
    assert "append" not in found and "Rect" not in found


def test_chained_dereference_and_installed_packages(monitor):
    assert {"width", "area"} <= names(monitor, MAIN[: -len("first.")] + "first.scaled(2).")
    assert {"join", "dirname"} <= names(monitor, "import os\nos.path.")


def test_unknown_receiver_is_not_restricted(monitor):
    assert names(monitor, "def f(x):\n    return x.") is None
    assert names(monitor, "undefined_thing.") is None


def test_receivers_jedi_cannot_describe_are_free(monitor):
    assert names(monitor, "x = None\nx.") is None  # a placeholder: the real object comes later
    abstract = "import abc\nclass Base(abc.ABC):\n    pass\nBase."
    assert names(monitor, abstract) is None  # a metaclass's attributes (ABCMeta.register) are not listed
    narrowed = "def f(node):\n    if isinstance(node, int):\n        return node."
    assert names(monitor, narrowed) is None  # jedi does not follow isinstance narrowing


def test_plain_class_receivers_list_their_and_types_attributes(monitor):
    found = names(monitor, "from geometry.shapes import Rect\nRect.")
    assert {"area", "scaled", "mro", "__name__"} <= found and "append" not in found


def test_assignment_target_may_create_an_attribute(monitor):
    code = "class C:\n    def __init__(self):\n        self."
    r = monitor.restriction(code.encode())
    assert r.complete_ok(b"brand_new", ord(" ")) and r.complete_ok(b"brand_new", ord("="))
    assert not r.complete_ok(b"brand_new", ord("("))  # calling it: it must exist
    module = monitor.restriction(b"import os\nos.")  # modules: their attributes only
    assert module.complete_ok(b"sep", ord(" ")) and not module.complete_ok(b"brand_new", ord("="))
    loaded = monitor.restriction((code + "a = 1\n        return self.").encode())
    assert loaded.complete_ok(b"a", ord("\n")) and not loaded.complete_ok(b"brand_new", ord(" "))


def test_no_trigger_inside_strings_and_comments(monitor):
    assert names(monitor, 'import os\ns = "os.') is None
    assert names(monitor, "import os\n# see os.") is None
    assert names(monitor, 'import os\ns = """doc\nos.') is None
    docstring = '"""Doc.\nA line at column 0 (with brackets).\n"""\n\n'
    assert names(monitor, docstring) is None  # a statement start, not a line in the docstring
    assert names(monitor, "1.") is None


def test_imports_name_real_modules_and_members(monitor):
    modules = names(monitor, "import ")
    assert {"os", "json", "geometry", "jedi"} <= modules and "no_such_module_xyz" not in modules
    assert {"path", "getcwd"} <= names(monitor, "from os import ")
    assert "shapes" in names(monitor, "from geometry import ")
    assert names(monitor, "import numpy as ") is None  # an alias is a new name


def test_names_in_load_positions_are_defined_ones(monitor):
    code = "import os\n\ndef f(alpha, beta):\n    gamma = alpha\n    return "
    found = names(monitor, code)
    assert {"alpha", "beta", "gamma", "os", "len", "lambda", "None"} <= found
    assert "delta" not in found
    assert names(monitor, code.replace("return ", "x = [alpha, ")) is not None


def test_binding_positions_are_free(monitor):
    body = "def f(alpha):\n    "
    assert names(monitor, body) is None  # statement start: may be an assignment
    assert names(monitor, body + "return [") is None  # first element: a comprehension may bind
    assert names(monitor, body + "if ") is None  # the whole condition: a walrus may bind
    assert names(monitor, "def g(a, ") is None  # parameters
    assert names(monitor, "for ") is None


def test_call_arguments_include_keyword_parameters(monitor):
    code = "def g(a, b=1, *, key=2):\n    pass\n\ng(1, "
    assert {"key", "b", "g"} <= names(monitor, code)
    # **kwargs or an unknown callee: any keyword may come
    assert names(monitor, "def h(a, *args, **kw):\n    pass\n\nh(1, ") is None
    any_keyword = monitor.restriction(b"def h(a, **kw):\n    pass\n\nh(1, ")  # and no positional
    assert any_keyword.complete_ok(b"whatever", ord("=")) and not any_keyword.complete_ok(b"a", ord(")"))
    assert names(monitor, "unknown(1, ") is None


def test_names_on_continuation_lines_and_in_calls_come_from_the_logical_line(monitor):
    """Inside a call spread over lines, the names are those in scope where the logical
    line starts, the line's own words and the callee's keyword parameters: the same set
    jedi gives at the point, without asking it at every point."""
    code = "def g(a, b=1, *, key=2):\n    pass\n\ndef f(alpha):\n    local = 1\n    g(alpha,\n      "
    found = names(monitor, code)
    assert {"alpha", "local", "key", "b", "g", "len"} <= found
    assert "delta" not in found
    # a word the line itself wrote (a lambda parameter) is in scope too
    assert "item" in names(monitor, code.replace("g(alpha,", "g(lambda item: item,"))


LEX_PARTS = ['"', "'", '"""', "#", "\n", "(", ")", "[", "]", " x", "\\", ".", ", "]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(LEX_PARTS), max_size=60))
def test_incremental_lexing_equals_a_scan_from_the_start(monitor, parts):
    """The lexical state the monitor keeps (anchors before the end of long rescans, the
    last texts lexed) equals one scan of the whole text, as a mask asks for many
    texts that share a long prefix."""
    text = b""
    for part in parts:
        text += part.encode() * 20  # long steps: rescans past the anchor distance
        for sibling in (b"", b".", b'"', b"'" * 3, b"(x"):
            assert monitor._lex(text + sibling) == scan(LexState(), text + sibling)


OPS = "from geometry.ops import grow\n\nr = None\n"


def refused(monitor: PythonMonitor, text: str) -> str:
    return "".join(sorted(chr(b) for b in monitor.refused((OPS + text).encode())))


def test_call_arity_refuses_too_few_arguments(monitor):
    assert refused(monitor, "grow(") == ")"  # grow(rect, by, *, times=1), in another file
    assert refused(monitor, "grow(r") == ")"
    assert refused(monitor, "grow(r, 2") == ""
    assert refused(monitor, "grow(r, by=2") == ""
    assert refused(monitor, "grow(by=2, rect=r") == ""
    assert refused(monitor, "grow(*args") == ""  # an unpacking: the count is unknown
    assert refused(monitor, "len(") == ")"  # builtins, from typeshed
    assert refused(monitor, "print(") == ""


def test_call_arity_refuses_too_many_positional_arguments(monitor):
    after = OPS + "grow(r, 2, "
    assert {"0", "[", '"', "-"} <= set(refused(monitor, "grow(r, 2, "))
    only = monitor.restriction(after.encode())
    assert only is not None and only.complete_ok(b"times", ord("=")) and not only.complete_ok(b"r", ord(")"))
    assert not only.complete_ok(b"by", ord("="))  # given already
    assert refused(monitor, "grow(r, 2, times=3, ") == "\"'(-0123456789[{"
    # overloads: legal under one signature is legal
    assert refused(monitor, "range(1, ") == ""
    # commas that do not separate arguments, and calls jedi cannot see
    assert refused(monitor, "grow(lambda a, b: a, 2, ") == ""
    assert refused(monitor, "sorted(x for x, y in z") == ""
    assert refused(monitor, "unknown(1, 2, 3, ") == ""
    assert refused(monitor, "(1, 2, ") == ""
    assert refused(monitor, "def grow2(a, ") == ""


def test_call_arity_in_the_matcher(project, default_vocab):
    prefix = OPS + "x = grow"
    matcher = _constraint(project, default_vocab, prefix).matcher_after(prefix)
    assert not matcher.accepts(_token(default_vocab, b"()"))
    matcher.advance(_token(default_vocab, b"("))
    assert not matcher.accepts(_token(default_vocab, b")"))
    for piece in (b"r", b",", b" ", b"2"):
        matcher.advance(_token(default_vocab, piece))
    assert matcher.accepts(_token(default_vocab, b")")) and matcher.accepts(_token(default_vocab, b"),"))
    matcher.advance(_token(default_vocab, b","))
    for third in (b" [", b' "', b" -"):  # a third positional argument
        assert not matcher.accepts(_token(default_vocab, third))
    assert matcher.accepts(_token(default_vocab, b" times"))
    assert not matcher.accepts(_token(default_vocab, b" r"))


def test_analysis_timeout_leaves_the_trigger_free(project):
    slow = PythonMonitor(project, project / "main.py", timeout=1e-6)
    assert slow.restriction(MAIN.encode()) is None
    assert slow.stats.timeouts == 1


def test_bad_project_root_is_a_clear_error(tmp_path):
    with pytest.raises(OptionError, match="not a readable directory"):
        PythonMonitor(tmp_path / "missing")
    with pytest.raises(OptionError, match="project_root"):
        build_monitors("python")
    with pytest.raises(OptionError, match="unknown monitor"):
        build_monitors("java", project_root=tmp_path)


def _constraint(project, default_vocab, prefix: str, grammar=None) -> MonitoredConstraint:
    monitors = build_monitors(
        "python", project_root=project, file_path=project / "main.py", prefix=prefix, timeout=COLD_JEDI
    )
    return MonitoredConstraint(grammar, monitors, default_vocab)


def _token(vocab, text: bytes) -> int:
    return next(i for i, b in enumerate(vocab.token_bytes) if b == text)


def test_matcher_tokens_follow_the_restriction(project, default_vocab):
    matcher = _constraint(project, default_vocab, MAIN).matcher_after(MAIN)
    assert matcher.accepts(_token(default_vocab, b"area"))
    assert matcher.accepts(_token(default_vocab, b"width"))
    assert not matcher.accepts(_token(default_vocab, b"append"))
    assert not matcher.accepts(_token(default_vocab, b"x"))
    matcher.advance(_token(default_vocab, b"sc"))  # a prefix of `scaled`
    assert not matcher.is_accepting()  # `sc` is not an attribute
    assert not matcher.accepts(_token(default_vocab, b"("))
    matcher.advance(_token(default_vocab, b"aled"))
    assert matcher.is_accepting() and matcher.accepts(_token(default_vocab, b"("))


def test_prefix_inside_an_identifier_continues_it(project, default_vocab):
    prefix = MAIN + "sca"
    matcher = _constraint(project, default_vocab, prefix).matcher_after(prefix)
    assert matcher.accepts(_token(default_vocab, b"led"))
    assert not matcher.accepts(_token(default_vocab, b"ffer"))


@pytest.mark.parametrize(
    "cut", ["first.", "first.scaled(2).", "first.area() + first.", "first.scaled(", "first.scaled(2, "]
)
def test_mask_equals_accepts_for_every_token(project, default_vocab, cut):
    prefix = MAIN[: -len("first.")] + cut
    matcher = _constraint(project, default_vocab, prefix).matcher_after(prefix)
    mask = torch.zeros(default_vocab.size, dtype=torch.bool)
    matcher.fill_mask(mask)
    assert 0 < int(mask.sum()) < default_vocab.size
    wrong = [t for t in range(default_vocab.size) if bool(mask[t]) != matcher.accepts(t)]
    assert wrong == []


def test_with_the_python_grammar(project, default_tokenizer, default_vocab):
    from grammars import compile as compile_grammar

    grammar = compile_grammar("python", default_tokenizer)
    matcher = _constraint(project, default_vocab, MAIN, grammar).matcher_after(MAIN)
    assert matcher.accepts(_token(default_vocab, b"area"))
    assert not matcher.accepts(_token(default_vocab, b"append"))
    matcher.advance(_token(default_vocab, b" "))  # `first. area` is Python too
    assert matcher.accepts(_token(default_vocab, b"area"))
    assert not matcher.accepts(_token(default_vocab, b"append"))
    assert not matcher.accepts(_token(default_vocab, b"("))  # grammar: an attribute name must come


def _humaneval(n: int) -> list[str]:
    path = shared_path("python-problems", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt") as fh:
        problems = [json.loads(line) for line in fh]
    return [p["prompt"] + p["canonical_solution"] for p in problems[:n]]


@pytest.mark.shared_data
def test_real_code_is_never_refused(tmp_path, default_tokenizer, default_vocab):
    """Soundness on code nobody here wrote: HumanEval's canonical solutions, token by
    token, through the monitor; every token must be accepted."""
    for k, code in enumerate(_humaneval(12)):
        file = tmp_path / f"solution_{k}.py"
        file.write_text(code)
        monitors = build_monitors("python", project_root=tmp_path, file_path=file, timeout=COLD_JEDI)
        matcher = MonitoredConstraint(None, monitors, default_vocab).matcher()
        for tok in default_tokenizer(code, add_special_tokens=False).input_ids:
            assert matcher.accepts(tok), (k, matcher.text()[-80:], default_vocab.token_bytes[tok])
            matcher.advance(tok)
        stats = monitors[0].stats
        assert stats.restricted > 0 and stats.failures == 0, stats.to_dict()


@pytest.mark.default_model
def test_generated_attribute_is_real(project, default_model):
    model, tokenizer = default_model
    prefix = textwrap.dedent(MAIN)
    gen = __import__("plugin").constrained_generate(
        model,
        tokenizer,
        prefix,
        prefix=prefix,
        monitors="python",
        project_root=project,
        file_path=project / "main.py",
        max_new_tokens=4,
        analysis_timeout=COLD_JEDI,
    )
    ident = ""
    for ch in gen.text:
        if not (ch.isalnum() or ch == "_"):
            break
        ident += ch
    assert ident in {"area", "scaled", "width", "height"} or ident.startswith("__"), gen.text
    assert gen.stats["monitors"]["python"]["restricted"] >= 1
