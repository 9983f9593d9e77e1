"""The SQL monitor: table, column and function names come from a live SQLite database.

The schema is read once with ``PRAGMA`` (tables, their columns, the functions SQLite
offers). At a point where an identifier may start, the monitor scans the statement so
far (strings, quoted identifiers and comments are skipped; nothing is restricted inside
them) and follows the scopes of its ``SELECT`` cores and subqueries:

* after ``FROM``, ``JOIN``, a ``,`` in a ``FROM`` list, ``INTO``, ``UPDATE``: a table name;
* after ``X.``: a column of the table ``X`` names (an alias, resolved through the
  ``FROM`` clauses of this scope and the enclosing ones); an alias not bound yet (the
  ``SELECT`` list comes before ``FROM``) allows any column of the database;
* in an expression (``SELECT`` list, ``WHERE``, ``ON``, ``GROUP BY``, ``HAVING``,
  ``ORDER BY``, function arguments): once ``FROM`` is known, the columns of the tables
  in scope, the result aliases, the functions and the keywords; before ``FROM``, any
  column of the database. An identifier followed by ``.`` must name a table or alias in
  scope (any name before ``FROM``).

Names are compared case-insensitively, like SQLite does. Aliases (after ``AS``, or
after a table name or an expression) are new names and are never restricted.
``CREATE`` statements and statements starting with ``WITH`` are not restricted.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from monitors.base import Monitor
from monitors.restriction import Restriction
from plugin.errors import OptionError

SQLITE_KEYWORDS = frozenset(
    """ABORT ACTION ADD AFTER ALL ALTER ALWAYS ANALYZE AND AS ASC ATTACH AUTOINCREMENT BEFORE
    BEGIN BETWEEN BY CASCADE CASE CAST CHECK COLLATE COLUMN COMMIT CONFLICT CONSTRAINT CREATE
    CROSS CURRENT CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP DATABASE DEFAULT DEFERRABLE
    DEFERRED DELETE DESC DETACH DISTINCT DO DROP EACH ELSE END ESCAPE EXCEPT EXCLUDE EXCLUSIVE
    EXISTS EXPLAIN FAIL FILTER FIRST FOLLOWING FOR FOREIGN FROM FULL GENERATED GLOB GROUP
    GROUPS HAVING IF IGNORE IMMEDIATE IN INDEX INDEXED INITIALLY INNER INSERT INSTEAD INTERSECT
    INTO IS ISNULL JOIN KEY LAST LEFT LIKE LIMIT MATCH MATERIALIZED NATURAL NO NOT NOTHING
    NOTNULL NULL NULLS OF OFFSET ON OR ORDER OTHERS OUTER OVER PARTITION PLAN PRAGMA PRECEDING
    PRIMARY QUERY RAISE RANGE RECURSIVE REFERENCES REGEXP REINDEX RELEASE RENAME REPLACE
    RESTRICT RETURNING RIGHT ROLLBACK ROW ROWS SAVEPOINT SELECT SET TABLE TEMP TEMPORARY THEN
    TIES TO TRANSACTION TRIGGER UNBOUNDED UNION UNIQUE UPDATE USING VACUUM VALUES VIEW VIRTUAL
    WHEN WHERE WINDOW WITH WITHOUT TRUE FALSE STRICT ROWID STORED""".lower().split()
)
# After these, an identifier starts an expression (a column, a function, a qualifier).
_EXPRESSION_AFTER = frozenset(
    [
        "select",
        "distinct",
        "all",
        "where",
        "and",
        "or",
        "not",
        "on",
        "by",
        "having",
        "when",
        "then",
        "else",
        "case",
        "between",
        "in",
        "like",
        "glob",
        "is",
        "escape",
        "limit",
        "offset",
        "exists",
        "set",
    ]
) | frozenset([",", "(", "=", "==", "<", ">", "<=", ">=", "!=", "<>", "+", "-", "*", "/", "%", "||"])
_BEFORE_IDENTIFIER = frozenset(b" \t\n.(,=<>+-*/%|!")
# Keywords that end a FROM clause (refused while a qualifier used before FROM is unbound)
_CLAUSE_ENDS = frozenset(
    w.encode()
    for w in ["where", "group", "order", "limit", "having", "union", "intersect", "except", "window"]
)
_JOIN_WORDS = frozenset(
    w.encode() for w in ["join", "inner", "left", "outer", "cross", "natural", "on", "using"]
)
_CLAUSES = frozenset(["select", "from", "where", "group", "having", "order", "limit", "on", "using", "set"])
_TOKEN = re.compile(
    rb"""(?P<space>\s+)|(?P<line>--[^\n]*(\n|$))|(?P<block>/\*(.|\n)*?(\*/|$))
    |(?P<string>'([^']|'')*('|$))|(?P<quoted>"[^"]*("|$)|`[^`]*(`|$)|\[[^\]]*(\]|$))
    |(?P<word>[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)|(?P<number>[0-9][0-9A-Za-z_.]*|\.[0-9][0-9A-Za-z_]*)
    |(?P<op><=|>=|<>|!=|==|\|\||.)""",
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class SQLiteSchema:
    """Tables (lower-case name → lower-case columns) and function names of a database."""

    tables: dict[str, frozenset[str]]
    functions: frozenset[str]

    @classmethod
    def read(cls, database: str | Path | sqlite3.Connection) -> SQLiteSchema:
        """Read the schema of a SQLite file (opened read-only) or an open connection.

        Raises :class:`OptionError` when the path does not exist or is not SQLite.
        """
        if isinstance(database, sqlite3.Connection):
            return cls._from_connection(database, str(database))
        path = Path(database)
        if not path.is_file():
            raise OptionError(f"database {str(path)!r} does not exist")
        try:
            conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise OptionError(f"cannot open database {str(path)!r}: {exc}") from None
        try:
            return cls._from_connection(conn, str(path))
        finally:
            conn.close()

    @classmethod
    def _from_connection(cls, conn: sqlite3.Connection, where: str) -> SQLiteSchema:
        try:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                    "AND name NOT LIKE 'sqlite_%'"
                )
            ]
            tables = {
                name.lower(): frozenset(
                    r[1].lower()
                    for r in conn.execute(f'PRAGMA table_info("{name.replace(chr(34), chr(34) * 2)}")')
                )
                for name in names
            }
            functions = frozenset(r[0].lower() for r in conn.execute("PRAGMA function_list"))
        except sqlite3.DatabaseError as exc:
            raise OptionError(f"database {where!r} is not a readable SQLite database: {exc}") from None
        return cls(tables, functions)

    @property
    def all_columns(self) -> frozenset[str]:
        out: set[str] = set()
        for cols in self.tables.values():
            out |= cols
        return frozenset(out)


@dataclass
class _Scope:
    parent: _Scope | None = None
    tables: dict[str, str | None] = field(default_factory=dict)  # name or alias → table (None: unknown)
    from_seen: bool = False
    clause: str = ""
    aliases: set[str] = field(default_factory=set)
    # qualifiers used before FROM bound them (``SELECT T1.name FROM singer AS T1``):
    # qualifier → the columns used with it
    forward: dict[str, set[str]] = field(default_factory=dict)

    def bind(self, name: str, table: str | None) -> None:
        self.tables[name] = table
        self.forward.pop(name, None)

    def lookup(self, name: str) -> tuple[bool, str | None]:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.tables:
                return True, scope.tables[name]
            scope = scope.parent
        return False, None

    def visible(self) -> tuple[dict[str, str | None], set[str]]:
        tables: dict[str, str | None] = {}
        aliases: set[str] = set()
        scope: _Scope | None = self
        while scope is not None:
            for k, v in scope.tables.items():
                tables.setdefault(k, v)
            aliases |= scope.aliases
            scope = scope.parent
        return tables, aliases


@dataclass
class _Frame:
    scope: _Scope
    fresh: bool = True  # just opened: a SELECT here starts a subquery
    from_subquery: bool = False  # a ( right after FROM/JOIN


@dataclass
class _Context:
    """Where the end of a statement stands: what may the next identifier be."""

    kind: str  # "table", "column-of", "expression", "from-continues", "join", "free"
    qualifier: str = ""
    scope: _Scope | None = None


def _context(text: bytes) -> _Context | None:
    """Scan the statement under way at the end of ``text``; None inside strings, quoted
    identifiers or comments, or in statements the monitor does not restrict."""
    tokens: list[tuple[str, str, int, int]] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "op"
        if kind in ("space", "line", "block"):
            if kind != "space" and not (m.group().endswith(b"\n") or m.group().endswith(b"*/")):
                return None  # the text ends inside a comment
            continue
        value = m.group()
        if kind == "string" and (len(value) < 2 or not value.endswith(b"'") or _odd_quotes(value)):
            return None
        if kind == "quoted" and (
            len(value) < 2 or value[-1:] != {b'"': b'"', b"`": b"`", b"[": b"]"}[value[:1]]
        ):
            return None
        tokens.append((kind, value.decode("utf-8", "replace").lower(), m.start(), m.end()))
        if kind == "op" and value == b";":
            tokens.clear()
    if not tokens:
        return None
    first = tokens[0][1]
    if first not in ("select", "insert", "update", "delete", "replace"):
        return None
    root = _Scope()
    frames = [_Frame(root)]
    expect_table = False
    expect_alias = False
    pending: str | None = None
    prev_value = False  # the previous token ends a value (an alias may follow)
    for i, (kind, value, _start, _end) in enumerate(tokens):
        frame = frames[-1]
        scope = frame.scope
        is_kw = kind == "word" and value in SQLITE_KEYWORDS
        if kind == "op" and value == "(":
            child = _Frame(scope, from_subquery=expect_table)
            frames.append(child)
            expect_table = expect_alias = False
            prev_value = False
            continue
        if kind == "op" and value == ")":
            closed = frames.pop() if len(frames) > 1 else frame
            if closed.from_subquery:
                pending, expect_alias = None, True
            prev_value = True
            continue
        if is_kw and value == "select":
            if frame.fresh and len(frames) > 1:
                frame.scope = scope = _Scope(parent=scope)
            scope.from_seen = False
            scope.clause = "select"
        elif is_kw and (value in ("from", "join", "into") or (value == "update" and i == 0)):
            expect_table, expect_alias = True, False
            scope.from_seen = True
            scope.clause = "from" if value in ("from", "join") else "into"
        elif is_kw and value in _CLAUSES:
            scope.clause = value
            expect_table = expect_alias = False
        elif is_kw and value == "as":
            pass
        elif kind == "op" and value == "," and scope.clause == "from":
            expect_table, expect_alias = True, False
        elif kind in ("word", "quoted") and not is_kw:
            name = value.strip('"`[]')
            after_dot = i + 1 < len(tokens) and tokens[i + 1][1] == "."
            if expect_table and not after_dot:
                scope.bind(name, name)
                pending, expect_table, expect_alias = name, False, True
            elif expect_alias:
                scope.bind(name, pending)
                expect_alias = False
            elif after_dot and not scope.from_seen and not scope.lookup(name)[0]:
                column = tokens[i + 2][1] if i + 2 < len(tokens) and tokens[i + 2][0] == "word" else ""
                scope.forward.setdefault(name, set()).update([column] if column else [])
            elif scope.clause == "select" and (prev_value or (i > 0 and tokens[i - 1][1] == "as")):
                scope.aliases.add(name)  # a result column's alias
        frame.fresh = False
        prev_value = kind in ("word", "quoted", "number", "string") and not is_kw
    kind, value, _start, end = tokens[-1]
    adjacent = end == len(text)
    scope = frames[-1].scope
    if kind == "op" and value == "." and adjacent and len(tokens) >= 2:
        q_kind, q_value, _, q_end = tokens[-2]
        if q_kind in ("word", "quoted") and q_end == tokens[-1][2]:
            return _Context("column-of", q_value.strip('"`[]'), scope)
        return None
    if expect_table:
        return _Context("table", scope=scope)
    if scope.forward and scope.clause == "from" and (expect_alias or value == "as"):
        # qualifiers used before FROM are still unbound: the FROM clause goes on
        return _Context("from-continues", scope=scope)
    if scope.forward and scope.clause == "from" and prev_value:
        return _Context("join", scope=scope)  # after an alias: only a join may follow
    if expect_alias or value == "as":
        return _Context("free")
    if value in _EXPRESSION_AFTER and (kind == "op" or value in SQLITE_KEYWORDS):
        return _Context("expression", scope=scope)
    return _Context("free")


def _odd_quotes(value: bytes) -> bool:
    """Whether a '…' token is unterminated (its quotes pair up as '' escapes)."""
    return value.count(b"'") % 2 == 1


class SQLiteMonitor(Monitor):
    """Restricts table, column and function names to a live SQLite schema."""

    name = "sql"
    gated = frozenset(b";")  # ends the statement: refused while a qualifier is unbound

    def __init__(self, database: str | Path | sqlite3.Connection, *, timeout: float = 5.0) -> None:
        super().__init__(timeout=timeout)
        self.schema = SQLiteSchema.read(database)
        enc = lambda names: frozenset(n.encode() for n in names)  # noqa: E731
        self._keywords = enc(SQLITE_KEYWORDS)
        self._functions = enc(self.schema.functions)
        self._tables = enc(self.schema.tables)
        self._all_columns = enc(self.schema.all_columns)

    def accepts_end(self, text: bytes) -> bool:
        """The statement may end (``;`` or the end of the output) only once every
        qualifier used before ``FROM`` (in this scope or an enclosing one) is bound:
        ``SELECT T1.name FROM singer`` would name a table that does not exist."""
        return not self.refused(text)  # the gate's answer, cached per text

    def analyse_gate(self, text: bytes) -> frozenset[int]:
        ctx = _context(text)
        scope = None if ctx is None else ctx.scope
        while scope is not None:
            if scope.forward:
                return self.gated
            scope = scope.parent
        return frozenset()

    def analyse(self, text: bytes) -> Restriction | None:
        if text and text[-1] not in _BEFORE_IDENTIFIER:
            return None
        start = time.perf_counter()
        ctx = _context(text)
        if ctx is None or ctx.kind == "free":
            return None
        return self.record(ctx.kind, self._restriction(ctx), time.perf_counter() - start)

    def _restriction(self, ctx: _Context) -> Restriction | None:
        schema = self.schema
        if ctx.kind in ("table", "from-continues") and ctx.scope is not None and ctx.scope.forward:
            # A qualifier used before FROM is still unbound: the FROM clause may not end
            # (no `;`, `)` or WHERE…) until a table or alias binds it; the name that binds
            # the last one may end it.
            last = (
                frozenset(q.encode() for q in ctx.scope.forward)
                if len(ctx.scope.forward) == 1
                else frozenset()
            )
            go_on: frozenset[bytes] | None = None
            if ctx.kind == "table":
                last &= self._tables
                go_on = self._tables
            follow = [(ord(c), go_on) for c in " \t\n,"]
            if ctx.kind == "table":
                follow.append((ord("."), frozenset([b"main", b"temp"])))
            return Restriction(
                last, follow=tuple(follow), casefold=True, kind=ctx.kind, excluded=_CLAUSE_ENDS
            )
        if ctx.kind == "join":
            return Restriction(_JOIN_WORDS, casefold=True, kind=ctx.kind)
        if ctx.kind == "table":
            return Restriction(
                self._tables, follow=((ord("."), frozenset([b"main", b"temp"])),), casefold=True, kind="table"
            )
        assert ctx.scope is not None
        if ctx.kind == "column-of":
            found, table = ctx.scope.lookup(ctx.qualifier)
            if found:
                if table is None or table not in schema.tables:
                    return None  # a subquery or CTE: its columns are not known here
                columns = schema.tables[table]
            elif ctx.qualifier in schema.tables:
                columns = schema.tables[ctx.qualifier]
            else:
                columns = schema.all_columns  # an alias bound later, in FROM
            return Restriction(frozenset(c.encode() for c in columns), casefold=True, kind="column")
        tables, aliases = ctx.scope.visible()
        if ctx.scope.from_seen:
            columns: set[str] = set(aliases)
            for table in tables.values():
                if table is None or table not in schema.tables:
                    return None  # a subquery in FROM: its columns are not known here
                columns |= schema.tables[table]
            qualifiers: frozenset[bytes] | None = frozenset(t.encode() for t in tables)
        else:
            columns = set(schema.all_columns) | aliases
            qualifiers = None
        names = frozenset(c.encode() for c in columns) | self._functions | self._keywords
        return Restriction(names, follow=((ord("."), qualifiers),), casefold=True, kind="expression")
