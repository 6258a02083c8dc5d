"""Statements on every request's path, compiled once and run on SQLite through the driver.

A one-row statement takes SQLite a few microseconds; running it through
``Connection.execute`` costs SQLAlchemy several times that (cache-key lookup, execution
context, result metadata, events) — on the sync path's two transactions that was a third of a
millisecond per request. :class:`Prepared` keeps SQLAlchemy Core as the one source of the SQL:
the statement is compiled by SQLAlchemy (once per set of parameter names) and SQLAlchemy's own
type processors convert values both ways, so both routes bind and read the same things. On
SQLite the compiled string runs on the ``sqlite3`` cursor; on any other dialect (PostgreSQL,
where a network round trip dwarfs this) ``Connection.execute`` runs it as usual.

Not supported (refused when compiled): expanding ``IN`` parameters and Python-callable column
defaults. Rows come back as named tuples: attribute and index access, like SQLAlchemy rows.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.selectable import Select

Processor = Callable[[Any], Any] | None
Statement = Select[Any] | Insert | Update | Delete


@dataclass(frozen=True)
class _Compiled:
    sql: str
    binds: tuple[tuple[str, Any, Processor], ...]
    """(parameter name, value when the caller gives none, bind processor) in placeholder order."""
    row: Callable[..., Any] | None
    """The named-tuple type of a returned row; None for a statement that returns nothing."""
    readers: tuple[Processor, ...]


class Prepared:
    """One Core statement, executed with :meth:`rows` / :meth:`first` on any connection.
    Parameters are given by name as for ``Connection.execute``: bound parameters, and column
    values of an INSERT or UPDATE (the compiled form is cached per set of names)."""

    def __init__(self, statement: Statement) -> None:
        self.statement = statement
        self._compiled: dict[frozenset[str], _Compiled] = {}

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> Sequence[Any]:
        """Run the statement; its rows (empty for one that returns none)."""
        if conn.dialect.name != "sqlite":
            result = conn.execute(self.statement, dict(params))
            return result.all() if result.returns_rows else []
        compiled = self._compiled.get(frozenset(params))
        if compiled is None:
            compiled = self._compiled[frozenset(params)] = self._compile(conn, params)
        values = []
        for name, default, process in compiled.binds:
            value = params.get(name, default)
            values.append(value if process is None else process(value))
        cursor = conn.connection.driver_connection.execute(compiled.sql, values)  # type: ignore[union-attr]
        if compiled.row is None:
            return []
        return [
            compiled.row(
                *(v if r is None else r(v) for v, r in zip(raw, compiled.readers, strict=True))
            )
            for raw in cursor.fetchall()
        ]

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any | None:
        rows = self.rows(conn, params)
        return rows[0] if rows else None

    def _compile(self, conn: Connection, params: Mapping[str, Any]) -> _Compiled:
        dialect = conn.dialect
        compiled = self.statement.compile(dialect=dialect, column_keys=list(params))
        assert isinstance(compiled, SQLCompiler)
        if compiled.positiontup is None or "POSTCOMPILE" in compiled.string:
            raise ValueError("Prepared needs a positional statement without expanding parameters")
        defaults = compiled.construct_params(dict(params))
        for column in [*compiled.insert_prefetch, *compiled.update_prefetch]:
            if column.key in params:
                continue
            if column.default is None or not column.default.is_scalar:
                raise ValueError(f"Prepared cannot compute the default of {column.key}")
            defaults[column.key] = column.default.arg  # type: ignore[attr-defined]
        binds = tuple(
            (name, defaults.get(name), compiled.binds[name].type.bind_processor(dialect))
            for name in compiled.positiontup
        )
        columns = list(self.statement.exported_columns)  # selected or RETURNING columns
        if not columns:
            return _Compiled(compiled.string, binds, None, ())
        row = namedtuple("Row", [c.key for c in columns])  # type: ignore[misc]
        readers = tuple(c.type.result_processor(dialect, None) for c in columns)
        return _Compiled(compiled.string, binds, row, readers)
