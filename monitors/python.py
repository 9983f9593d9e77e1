"""The Python monitor: jedi over the real project restricts attributes, names and imports.

At a point where an identifier may start, the monitor

1. looks at the last byte (most points are not triggers) and at the lexical state
   (:mod:`monitors.python_lexer`: never inside strings or comments);
2. parses the partial code with tree-sitter, with a probe identifier and temporary
   closing brackets appended, and reads the probe's syntactic role:
   ``obj.<probe>`` is a *dereference*, ``import <probe>`` / ``from m import <probe>`` an
   *import*, and a probe in a position that can only be a load (operand, call argument
   after the first, return value, right side of ``=``…) a *name*;
3. asks jedi (``jedi.Script`` on the generated text spliced into the real file, with
   ``jedi.Project`` rooted at the project) for the completions there.

A dereference is restricted to the attributes jedi lists for the inferred type(s),
including those defined in other files of the project and in installed packages;
when jedi infers nothing, or the type defines ``__getattr__``, nothing is restricted.
Names are restricted to what jedi sees in scope plus Python's keywords, and, inside a
call whose signature jedi knows, its keyword parameters (an unknown callee or one with
``**kwargs`` leaves the argument unrestricted).

Deliberately unrestricted, because the name there may be a new binding: the start of a
statement (``x = …``), the first element inside any bracket (a comprehension may bind
it: ``[x for x in xs]``), the whole condition of ``if``/``while`` (a walrus), and any
position tree-sitter can only parse as an error. One case is restricted although a new
binding is legal there: the middle of a chained assignment (``a = b = 0`` with ``b``
new).
"""

from __future__ import annotations

import itertools
import keyword
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from monitors.base import Monitor
from monitors.python_calls import Arguments, Signature
from monitors.python_lexer import LexState, scan, split_arguments
from monitors.restriction import Restriction
from plugin.errors import OptionError

PROBE = b"__stencil_probe__"
_ANCHOR_LAG = 64  # bytes before the end of a long rescan where a lexical anchor is left
_ANCHORS = 8  # anchors kept
_RECENT = 16  # recently lexed texts looked at for a known prefix
# An identifier can only follow these bytes (after an identifier byte it would continue
# it; after a quote or a closing bracket it would be a syntax error).
_BEFORE_IDENTIFIER = frozenset(b" \t\n.([{,=:;+-*/%<>&|^~!@")
_KEYWORDS = frozenset(w.encode() for w in (*keyword.kwlist, *keyword.softkwlist))
_BRACKETS = frozenset(
    {
        "list",
        "set",
        "tuple",
        "dictionary",
        "parenthesized_expression",
        "argument_list",
        "generator_expression",
        "list_comprehension",
        "set_comprehension",
        "dictionary_comprehension",
        "expression_list",
    }
)
# (parent type, field of the child or None) where an identifier is read, never bound
_LOAD_ROLES = frozenset(
    {
        ("assignment", "right"),
        ("augmented_assignment", "right"),
        ("binary_operator", "left"),
        ("binary_operator", "right"),
        ("comparison_operator", None),
        ("boolean_operator", "left"),
        ("boolean_operator", "right"),
        ("not_operator", "argument"),
        ("unary_operator", "argument"),
        ("return_statement", None),
        ("delete_statement", None),
        ("raise_statement", None),
        ("assert_statement", None),
        ("keyword_argument", "value"),
        ("pair", "key"),
        ("pair", "value"),
        ("subscript", "value"),
        ("subscript", "subscript"),
        ("call", "function"),
        ("attribute", "object"),
        ("conditional_expression", None),
        ("lambda", "body"),
        ("yield", None),
        ("await", None),
        ("list_splat", None),
        ("dictionary_splat", None),
        ("for_statement", "right"),
        ("for_in_clause", "right"),
        ("if_clause", None),
        ("except_clause", None),
        ("type", None),
        ("decorator", None),
        ("slice", None),
        ("argument_list", None),
        ("list", None),
        ("set", None),
        ("tuple", None),
        ("expression_list", None),
        ("dictionary", None),
    }
)
# A dotted name ending a text (the receiver of an attribute access).
_RECEIVER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Bytes that may follow a new attribute in an assignment target (`self.x = 1`, `self.x: int`).
_TARGET_ENDS = b" \t=:,"
# Non-identifier bytes that start a positional argument (refused when none fits).
_ARGUMENT_STARTS = frozenset(b"0123456789\"'([{-")
# A `(` after one of these words opens a parenthesised expression, not a call.
_NOT_CALLEE = frozenset(w.encode() for w in keyword.kwlist) - {b"None", b"True", b"False"}
_WORD = re.compile(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*")
_COMPOUND = (
    b"if",
    b"elif",
    b"while",
    b"for",
    b"with",
    b"def",
    b"class",
    b"except",
    b"async",
    b"else",
    b"try",
)


def _case_variants(s: str) -> set[str]:
    out = {""}
    for ch in s:
        out = {o + c for o in out for c in (ch.lower(), ch.upper())}
    return out


_STRING_PREFIXES = frozenset(
    p.encode() for base in ("r", "u", "f", "b", "br", "rb", "fr", "rf") for p in _case_variants(base)
)


class PythonMonitor(Monitor):
    """jedi + tree-sitter monitor for Python (see module docstring).

    ``project_root``: the project jedi analyses (its other files and the installed
    packages are visible). ``file_path``: the file being edited, inside the project
    (may be absent on disk). ``suffix``: the file's text after the cursor; its lines
    after the cursor's line are spliced after the generated text so jedi sees the file.
    """

    name = "python"
    gated = frozenset(b")") | _ARGUMENT_STARTS

    def __init__(
        self,
        project_root: str | Path,
        file_path: str | Path | None = None,
        *,
        suffix: str = "",
        timeout: float = 5.0,
        names: bool = True,
        arity: bool = True,
    ) -> None:
        super().__init__(timeout=timeout)
        import jedi
        import tree_sitter_python
        from tree_sitter import Language, Parser

        root = Path(project_root)
        if not root.is_dir():
            raise OptionError(f"project root {str(root)!r} is not a readable directory")
        try:
            next(root.iterdir(), None)
        except OSError as exc:
            raise OptionError(f"project root {str(root)!r} is not readable: {exc.strerror or exc}") from None
        self.project_root = root.resolve()
        path = Path(file_path) if file_path is not None else self.project_root / "__stencil_cursor__.py"
        self.file_path = path if path.is_absolute() else (self.project_root / path)
        self.suffix = suffix
        self.restrict_names = names
        self.check_arity = arity
        self._project = jedi.Project(str(self.project_root))
        # Types come from declarations only: jedi's guesses from call sites elsewhere
        # ("dynamic params") name attributes the real argument may lack.
        jedi.settings.dynamic_params = False
        jedi.settings.dynamic_params_for_other_modules = False
        self._jedi = jedi
        self._parser = Parser(Language(tree_sitter_python.language()))
        self._lex_cache: OrderedDict[bytes, LexState] = OrderedDict()
        self._lex_anchors: OrderedDict[bytes, LexState] = OrderedDict()
        self._line_names: OrderedDict[bytes, frozenset[bytes]] = OrderedDict()
        self._signatures: OrderedDict[bytes, tuple[Signature, ...] | None] = OrderedDict()

    # -- cheap checks -------------------------------------------------------------
    def _lex(self, text: bytes) -> LexState:
        found = self._lex_cache.get(text)
        if found is not None:
            return found
        base, state = self._lex_base(text)
        # A long rescan (a new file, or the cache flushed by a mask's many texts) leaves
        # an anchor a little before the end: the texts of the next steps extend it.
        cut = len(text) - _ANCHOR_LAG
        while cut > len(base) and text[cut - 1 : cut] in (b'"', b"'"):
            cut -= 1
        if cut - len(base) > _ANCHOR_LAG:
            state = scan(state, text[len(base) : cut], len(base))
            base = text[:cut]
            self._lex_anchors[base] = state
            if len(self._lex_anchors) > _ANCHORS:
                self._lex_anchors.popitem(last=False)
        state = scan(state, text[len(base) :], len(base))
        self._lex_cache[text] = state
        if len(self._lex_cache) > 256:
            self._lex_cache.popitem(last=False)
        return state

    def _lex_base(self, text: bytes) -> tuple[bytes, LexState]:
        """The longest prefix of ``text`` with a known lexical state, among the anchors and
        the last texts lexed (generation appends a token at a time). A prefix ending in a
        quote is not used: the quote may be the start of a triple one."""
        base, state = b"", LexState()
        recent = itertools.islice(reversed(self._lex_cache.items()), _RECENT)
        for known, st in itertools.chain(reversed(self._lex_anchors.items()), recent):
            if len(known) > len(base) and text.startswith(known) and known[-1:] not in (b'"', b"'"):
                base, state = known, st
        return base, state

    def analyse(self, text: bytes) -> Restriction | None:
        if text and text[-1] not in _BEFORE_IDENTIFIER:
            return None
        lex = self._lex(text)
        if not lex.in_code:
            return None
        call = self._call(text, lex)
        if call is not None and call[1].overflows(call[0]):
            # too many positional arguments: only a keyword argument's name may start here
            names = call[1].keyword_names(call[0])
            follow = ((ord("="), names), (ord(" "), names))
            return Restriction(frozenset(), follow=follow, kind="call")
        role = self._role(text, lex)
        if role is None:
            return None
        start = time.perf_counter()
        kind, new_names = role
        found = self.call_with_timeout(lambda: self._ask_jedi(text, lex.closers(), kind, new_names))
        return self.record(kind, found, time.perf_counter() - start)

    def analyse_gate(self, text: bytes) -> frozenset[int]:
        """``)`` while a required parameter is unfilled; the starts of a positional
        argument when none fits (see :mod:`monitors.python_calls`)."""
        lex = self._lex(text)
        if not lex.in_code:
            return frozenset()
        call = self._call(text, lex)
        if call is None:
            return frozenset()
        signatures, args = call
        refused = _ARGUMENT_STARTS if args.overflows(signatures) else frozenset()
        if args.refuses_close(signatures):
            refused |= {ord(")")}
        return frozenset(refused)

    # -- call arity ---------------------------------------------------------------
    def _call(self, text: bytes, lex: LexState) -> tuple[tuple[Signature, ...], Arguments] | None:
        """The signatures of the call whose arguments ``text`` ends in, and its arguments
        so far; None outside a call or when jedi does not know the callee."""
        if not self.check_arity or not lex.brackets or lex.brackets[-1] != ord("("):
            return None
        paren = lex.opened[-1]
        signatures = self._signatures_of(text, paren, lex)
        if not signatures:
            return None
        args = Arguments.parse(split_arguments(text[paren + 1 :]))
        return None if args is None else (signatures, args)

    def _signatures_of(self, text: bytes, paren: int, lex: LexState) -> tuple[Signature, ...] | None:
        """jedi's signatures for the call opened at ``paren``, asked once per call (an
        ask that failed or timed out is not repeated)."""
        key = text[: paren + 1]
        if key not in self._signatures:
            self._signatures[key] = None
            if len(self._signatures) > 256:
                self._signatures.popitem(last=False)
            if _is_call(text[:paren]):
                start = time.perf_counter()
                found = self.call_with_timeout(lambda: self._ask_signatures(key, lex.closers()))
                self._signatures[key] = found
                self.count("call", found is not None, time.perf_counter() - start)
        return self._signatures[key]

    def _ask_signatures(self, key: bytes, closers: bytes) -> tuple[Signature, ...] | None:
        before = key.decode("utf-8", errors="replace")
        signatures = self._script(before + closers.decode() + self._rest).get_signatures(*_position(before))
        if not signatures or any(s.type != "function" for s in signatures):
            return None  # unknown callee, or a class (see monitors.python_calls)
        return tuple(Signature.from_jedi(s) for s in signatures)

    # -- tree-sitter: the probe's syntactic role ----------------------------------
    def _role(self, text: bytes, lex: LexState) -> tuple[str, bool] | None:
        """``(kind, flag)`` or None: ``("attribute", may be an assignment target)``,
        ``("import", False)``, ``("name", inside a call's arguments)``."""
        chunk_start = self._top_level_start(text)
        code = text[chunk_start:] + PROBE + lex.closers()
        line_start = text.rfind(b"\n") + 1
        if text[line_start:].lstrip().startswith(_COMPOUND):
            code += b": pass"
        tree = self._parser.parse(code + b"\n")
        pos = len(text) - chunk_start
        node = tree.root_node.descendant_for_byte_range(pos, pos + len(PROBE))
        if node is None or node.type != "identifier" or node.start_byte != pos:
            return None
        parent = node.parent
        if parent is None:
            return None
        field = _field_of(node)
        statement = _enclosing_statement(node)
        if parent.type == "attribute" and field == "attribute":
            if _has_error(parent):
                return None
            # `self.x = …` at a statement's start may create the attribute
            target = statement is not None and statement.start_byte == parent.start_byte
            return "attribute", target
        if statement is not None and statement.type in ("import_statement", "import_from_statement"):
            if parent.type == "aliased_import" and field == "alias":
                return None
            return "import", False
        if not self.restrict_names or _has_error(node):
            return None
        if (parent.type, field) not in _LOAD_ROLES and (parent.type, None) not in _LOAD_ROLES:
            return None  # e.g. a whole `if`/`while` condition: may be a walrus target
        in_call = False
        child = node
        while child.parent is not None and child.parent.type not in ("block", "module"):
            up = child.parent
            if up.type in _BRACKETS:
                named = [c for c in up.named_children if c.type != "comment"]
                if named and named[0].id == child.id:
                    return None  # first element: a comprehension may bind it
                if up.type == "argument_list" and child.id == node.id:
                    in_call = True  # a direct argument: may be a keyword (``key=…``)
            if up.type in ("lambda_parameters", "parameters", "default_parameter", "typed_parameter"):
                return None
            child = up
        return "name", in_call

    def _top_level_start(self, text: bytes) -> int:
        """Start of the top-level statement the end of ``text`` is in: a line at column 0
        that starts in code (not inside a docstring) outside any bracket."""
        i = len(text)
        while True:
            i = text.rfind(b"\n", 0, i)
            if i < 0:
                return 0
            nxt = text[i + 1 : i + 2]
            if nxt and (nxt.isalpha() or nxt in (b"@", b"_")) and i + 1 < len(text) - 1:
                state = self._lex(text[: i + 1])
                if state.in_code and not state.brackets:
                    return i + 1

    # -- jedi ---------------------------------------------------------------------
    def _ask_jedi(self, text: bytes, closers: bytes, kind: str, new_names: bool) -> Restriction | None:
        """jedi's completions at the end of ``text`` as a restriction. ``new_names``: names
        jedi does not list may come (a new attribute in an assignment target, a keyword
        argument in a call)."""
        rest = self._rest
        line_start = self._logical_line_start(text) if kind == "name" else None
        if line_start is not None:
            # In a call's arguments, the callee's keyword parameters too (its signatures
            # are asked once per call, by the arity check); None: the callee is unknown,
            # a class, or takes **kwargs, and the argument is left free.
            keywords = self._keyword_parameters(text) if new_names else frozenset()
            if keywords is None:
                return None
            names = self._scope_names(text, line_start, rest)
            if not names:
                return None
            # plus what the line binds itself (lambda parameters, walrus targets, …)
            return self._names(names | keywords | frozenset(_WORD.findall(text[line_start:])))
        line_start = text.rfind(b"\n") + 1
        before = text.decode("utf-8", errors="replace")
        line, column = _position(before)
        # Open brackets are closed: jedi loses the local names after an unbalanced line.
        script = self._script(before + closers.decode() + rest)
        names = frozenset(c.name.encode() for c in script.complete(line, column))
        if kind == "attribute":
            receiver = self._known_receiver(script, before) if names and b"__getattr__" not in names else None
            if receiver is None:
                return None  # unknown type, or attributes made at run time
            # an assignment target may be a new attribute of an object (any name before
            # `=`, `:`, …); new module attributes are rare enough to refuse
            objects = new_names and not all(d.type == "module" for d in receiver)
            follow = tuple((end, None) for end in _TARGET_ENDS) if objects else ()
            return Restriction(names, follow=follow, kind=kind)
        if kind == "import":
            return Restriction(names, kind=kind) if names else None
        extra: frozenset[bytes] = frozenset()
        if new_names:
            signatures = script.get_signatures(line, column)
            if not signatures or any(s.type == "class" for s in signatures):
                return None  # unknown callee, or a class (see monitors.python_calls)
            params = [p for signature in signatures for p in signature.params]  # every overload
            if any(str(p.kind).endswith("VAR_KEYWORD") for p in params):
                return None
            extra = frozenset(
                p.name.encode()
                for p in params
                if not str(p.kind).endswith(("POSITIONAL_ONLY", "VAR_POSITIONAL"))
            )
        return self._names(names | extra)

    def _logical_line_start(self, text: bytes) -> int | None:
        """Where the logical line ``text`` ends in starts (the line of its outermost open
        bracket): jedi's names there, asked once per line, plus the line's own words, are
        the names in scope at the end of ``text``. None when that line itself starts inside
        a bracket, string or comment (jedi is then asked at the end of ``text``)."""
        lex = self._lex(text)
        start = text.rfind(b"\n", 0, lex.opened[0] if lex.opened else len(text)) + 1
        head = self._lex(text[:start])
        return start if head.in_code and not head.brackets else None

    def _keyword_parameters(self, text: bytes) -> frozenset[bytes] | None:
        """The keyword parameters of the call whose arguments ``text`` ends in, over all of
        its signatures; None when they are unknown or unbounded (``**kwargs``)."""
        lex = self._lex(text)
        if not lex.brackets or lex.brackets[-1] != ord("("):
            return None
        signatures = self._signatures_of(text, lex.opened[-1], lex)
        if not signatures or any(sig.var_keyword for sig in signatures):
            return None
        return frozenset().union(*(sig.keyword for sig in signatures))

    @property
    def _rest(self) -> str:
        """The suffix without the rest of the cursor's line: jedi would read a name glued
        to the cursor (`obj.|area()`) as the one being completed."""
        newline = self.suffix.find("\n")
        return self.suffix[newline:] if newline >= 0 else "\n"

    @staticmethod
    def _known_receiver(script: Any, before: str) -> list[Any] | None:
        """jedi's definitions of the object before the final ``.`` when it has attributes
        jedi can list (else ``None``): not
        ``None`` (a placeholder assigned before the real object), not a class with a
        metaclass (its attributes, ``ABCMeta.register`` say, are not listed; ``type``'s
        are), not unknown, and not narrowed by an ``isinstance`` check jedi does not
        follow."""
        dot = before.rstrip().rfind(".")
        head = before[:dot]
        receiver = _RECEIVER.search(head)
        if receiver and re.search(r"isinstance\(\s*" + re.escape(receiver.group()) + r"\s*,", head):
            return None
        line, column = _position(head)
        found = script.infer(line, column) if column > 0 else []
        if not found or any(d.name == "NoneType" or _has_metaclass(d) for d in found):
            return None
        return found

    def _script(self, code: str) -> Any:
        return self._jedi.Script(code, path=str(self.file_path), project=self._project)

    def _scope_names(self, text: bytes, line_start: int, rest: str) -> frozenset[bytes]:
        """The names in scope on the line ``text`` ends in, asked once per line: jedi
        completes an empty statement at the line's indentation (``pass`` keeps it in the
        enclosing block; at an incomplete line jedi may lose the locals)."""
        key = text[:line_start]
        found = self._line_names.get(key)
        if found is None:
            line = text[line_start:]
            indent = line[: len(line) - len(line.lstrip(b" \t"))]
            head = (key + indent).decode("utf-8", errors="replace")
            script = self._script(head + "pass" + rest)
            found = frozenset(c.name.encode() for c in script.complete(head.count("\n") + 1, len(indent)))
            self._line_names[key] = found
            if len(self._line_names) > 256:
                self._line_names.popitem(last=False)
        return found

    @staticmethod
    def _names(names: frozenset[bytes]) -> Restriction:
        return Restriction(
            names | _KEYWORDS,
            follow=((ord('"'), _STRING_PREFIXES), (ord("'"), _STRING_PREFIXES)),
            kind="name",
        )


def _has_metaclass(definition: Any) -> bool:
    """Whether ``definition`` is a class whose metaclass (its own or a base's) is not
    ``type``. jedi's public API does not say; its inferred class values do
    (``get_metaclasses``), and when that fails the class counts as having one."""
    if definition.type != "class":
        return False
    try:
        return any(bool(value.get_metaclasses()) for value in definition._name.infer())
    except Exception:  # a private jedi API: when it changes, leave classes free
        return True


def _position(code: str) -> tuple[int, int]:
    """jedi's (line, column) of the end of ``code``."""
    return code.count("\n") + 1, len(code) - (code.rfind("\n") + 1)


def _is_call(before: bytes) -> bool:
    """Whether a ``(`` right after ``before`` opens a call's arguments (not a
    parenthesised expression, nor a ``def``'s parameters or a ``class``'s bases)."""
    before = before.rstrip()
    if before[-1:] in (b")", b"]"):
        return True
    last = re.search(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*$", before)
    if last is None or last.group() in _NOT_CALLEE:
        return False
    line = before[before.rfind(b"\n") + 1 :].lstrip()
    return not line.startswith((b"def ", b"class ", b"async def "))


def _field_of(node: Any) -> str | None:
    parent = node.parent
    for i, child in enumerate(parent.children):
        if child.id == node.id:
            return parent.field_name_for_child(i)
    return None


def _has_error(node: Any) -> bool:
    while node is not None:
        if node.type == "ERROR" or node.is_missing:
            return True
        if node.type in ("block", "module"):
            return False
        node = node.parent
    return False


def _enclosing_statement(node: Any) -> Any:
    while node is not None and not (node.type.endswith("_statement") or node.type == "module"):
        node = node.parent
    return node
