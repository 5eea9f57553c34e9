"""What a SQL statement does, read with PostgreSQL's own parser (pglast, libpg_query), and whether a token may.

`analyze(sql)` parses a Query or Parse message's text into one `Statement` per statement: the
operations it performs (select, insert, update, delete, or `session` for BEGIN/SET/SHOW/...), the
tables it reads or writes (schema-qualified), every column it references per table, its text with
the literals removed, and its pglast fingerprint. Everything the walker does not know is refused:
a node type, a function or operator outside the allow-lists, a statement kind, a setting. A CTE
name stands for its own query (checked where it is defined), never for a table.
`statement_error(stmt, scope)` then checks it against a token's scope; both are pure.

Names resolve as the server resolves them with the search_path the gateway pins
(`pg_catalog, <schema>`): an unqualified name is a readable catalog relation when it is one, else
a table of the connection's schema. An unqualified column must be granted on every table it could
belong to (the gateway has no catalog to tell which).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pglast
from pglast import ast, enums
from pglast.parser import ParseError

from jitgate.errors import (
    ColumnMasked,
    ColumnNotAllowed,
    FunctionNotAllowed,
    JitgateError,
    OperationNotAllowed,
    SettingNotAllowed,
    SqlNotParsed,
    StatementNotAllowed,
    TableNotAllowed,
)
from jitgate.pgsession import is_identity_setting
from jitgate.token import Scope

DML = ("select", "insert", "update", "delete")
SESSION = "session"
CATALOG_SCHEMA = "pg_catalog"
MAX_STATEMENT_BYTES = 1024 * 1024

# Catalog relations psql's \d and the drivers' type introspection read. Never: pg_authid, pg_shadow,
# pg_user_mapping(s), pg_statistic / pg_stats (sampled column values), pg_largeobject, pg_stat_activity
# (other sessions' statements), the settings and hba file views.
READABLE_CATALOGS = frozenset(
    {
        "pg_am", "pg_attrdef", "pg_attribute", "pg_class", "pg_collation", "pg_constraint", "pg_database",
        "pg_depend", "pg_description", "pg_enum", "pg_extension", "pg_index", "pg_indexes", "pg_inherits",
        "pg_language", "pg_namespace", "pg_opclass", "pg_operator", "pg_partitioned_table", "pg_policy",
        "pg_proc", "pg_publication", "pg_publication_rel", "pg_range", "pg_rewrite", "pg_sequence",
        "pg_statistic_ext", "pg_tables", "pg_tablespace", "pg_trigger", "pg_type", "pg_views", "pg_matviews",
        "pg_foreign_table", "pg_event_trigger", "pg_ts_config", "pg_ts_dict", "pg_ts_parser", "pg_ts_template",
        "pg_cast", "pg_conversion", "pg_aggregate", "pg_amop", "pg_amproc", "pg_opfamily", "pg_shdescription",
        "pg_seclabel", "pg_init_privs", "pg_transform",
        "pg_publication_namespace", "pg_auth_members",
        "pg_roles",  # the view shows rolpassword as ********; psql \\d reads it for row-security policies
    }
)

# Functions callable in any expression: arithmetic and text helpers, aggregates, window functions,
# pgvector's functions, and the catalog helpers psql and the drivers call. Anything else is refused
# (pg_read_file, lo_*, dblink, set_config, current_setting, pg_sleep, ...).
FUNCTIONS = frozenset(
    {
        # aggregates and window functions
        "count", "sum", "avg", "min", "max", "array_agg", "string_agg", "bool_and", "bool_or", "every",
        "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "row_number", "rank",
        "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value", "last_value",
        "nth_value",
        # numbers
        "abs", "round", "floor", "ceil", "ceiling", "trunc", "sqrt", "power", "exp", "ln", "log", "mod", "sign",
        "random", "greatest", "least", "width_bucket",
        # text
        "lower", "upper", "length", "char_length", "character_length", "octet_length", "substr", "substring",
        "left", "right", "trim", "btrim", "ltrim", "rtrim", "lpad", "rpad", "concat", "concat_ws", "replace",
        "position", "strpos", "split_part", "starts_with", "initcap", "reverse", "repeat", "md5", "format",
        "regexp_replace", "regexp_match", "regexp_like", "translate", "quote_ident", "quote_literal",
        "to_char", "to_number", "to_date", "to_timestamp", "array_length", "array_to_string", "cardinality",
        "unnest", "generate_series", "array_position", "array_upper", "array_lower",
        # time
        "now", "date_trunc", "date_part", "extract", "age", "clock_timestamp", "statement_timestamp",
        "transaction_timestamp", "make_interval", "timezone",
        # pgvector
        "l2_distance", "cosine_distance", "inner_product", "l1_distance", "vector_dims", "vector_norm",
        "l2_norm", "l2_normalize", "subvector", "binary_quantize", "hamming_distance", "jaccard_distance",
        # catalog helpers (psql \d, driver type introspection)
        "format_type", "pg_get_expr", "pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible",
        "pg_get_indexdef", "pg_get_constraintdef", "pg_get_userbyid", "obj_description", "col_description",
        "shobj_description", "pg_get_viewdef", "pg_get_triggerdef", "pg_get_statisticsobjdef_columns",
        "pg_encoding_to_char", "pg_relation_is_publishable", "pg_get_partkeydef", "pg_get_function_arguments",
        "pg_get_function_result", "pg_get_function_identity_arguments", "to_regtype", "to_regclass",
        "to_regproc", "to_regnamespace", "to_regtypemod", "version", "current_schema",
        "current_schemas", "current_database", "pg_backend_pid", "has_table_privilege",
        "has_column_privilege", "has_schema_privilege", "pg_has_role", "array_remove", "pg_relation_size",
        "pg_total_relation_size", "pg_size_pretty", "pg_table_size", "pg_indexes_size", "pg_get_serial_sequence",
        "pg_collation_is_visible", "pg_get_ruledef", "pg_get_keywords", "pg_char_to_encoding",
        "pg_postmaster_start_time", "pg_is_in_recovery", "txid_current", "pg_current_xact_id",
    }
)

# Operators (the last part of an operator name; `OPERATOR(pg_catalog.x)` too).
OPERATORS = frozenset(
    {
        "+", "-", "*", "/", "%", "^", "=", "<>", "!=", "<", ">", "<=", ">=", "||", "~~", "!~~", "~~*", "!~~*",
        "~", "!~", "~*", "!~*", "@", "|/", "&", "|", "#", "<<", ">>",
        # pgvector: L2, cosine, negative inner product, L1 distance; Hamming and Jaccard on bit vectors
        "<->", "<=>", "<#>", "<+>", "<~>", "<%>",
        # arrays and ranges
        "@>", "<@", "&&",
        # the names the parser gives BETWEEN forms (no operator can be named so)
        "BETWEEN", "NOT BETWEEN", "BETWEEN SYMMETRIC", "NOT BETWEEN SYMMETRIC",
    }
)

# Settings a client may SET / RESET / SHOW: formats, timeouts, planner knobs, pgvector's search knobs.
# Never search_path (pinned), role, session_authorization, jitgate.*; client_encoding only to UTF8,
# standard_conforming_strings only on (the gateway reads statements with those).
SETTINGS = frozenset(
    {
        "application_name", "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
        "transaction_timeout", "datestyle", "timezone", "intervalstyle", "extra_float_digits", "bytea_output",
        "client_min_messages", "default_transaction_isolation", "default_transaction_read_only",
        "default_transaction_deferrable", "transaction_isolation", "transaction_read_only",
        "transaction_deferrable", "work_mem", "enable_seqscan", "enable_indexscan", "enable_bitmapscan",
        "jit", "ivfflat.probes", "ivfflat.iterative_scan", "ivfflat.max_probes", "hnsw.ef_search",
        "hnsw.iterative_scan", "hnsw.max_scan_tuples", "hnsw.scan_mem_multiplier", "client_encoding",
        "standard_conforming_strings", "lc_monetary", "lc_numeric", "lc_time", "row_security",
    }
)
SHOWABLE = SETTINGS | {
    "server_version", "server_version_num", "server_encoding", "integer_datetimes", "max_identifier_length",
    "search_path", "is_superuser", "block_size", "lc_collate", "lc_ctype", "max_connections",
}
_FIXED = {"client_encoding": ("utf8", "utf-8", "unicode"), "standard_conforming_strings": ("on", "true")}

_CONST_TOKENS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})
_COMMENT_TOKENS = frozenset({"C_COMMENT", "SQL_COMMENT"})
_SETOP_NONE = enums.SetOperation.SETOP_NONE
_TRANSACTIONS = {
    enums.TransactionStmtKind.TRANS_STMT_BEGIN: "begin",
    enums.TransactionStmtKind.TRANS_STMT_START: "begin",
    enums.TransactionStmtKind.TRANS_STMT_COMMIT: "commit",
    enums.TransactionStmtKind.TRANS_STMT_ROLLBACK: "rollback",
    enums.TransactionStmtKind.TRANS_STMT_SAVEPOINT: "savepoint",
    enums.TransactionStmtKind.TRANS_STMT_RELEASE: "release",
    enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_TO: "rollback_to",
}
# Expression nodes that carry no name to check: only their children are walked.
_PLAIN = (
    ast.A_Const, ast.ParamRef, ast.BoolExpr, ast.NullTest, ast.BooleanTest, ast.CaseExpr, ast.CaseWhen,
    ast.CoalesceExpr, ast.MinMaxExpr, ast.A_ArrayExpr, ast.RowExpr, ast.A_Indirection, ast.A_Indices,
    ast.SQLValueFunction, ast.SortBy, ast.ResTarget, ast.WindowDef, ast.GroupingSet, ast.SetToDefault,
    ast.TypeName, ast.String, ast.Integer, ast.Float, ast.Boolean, ast.BitString,
)


@dataclass(frozen=True)
class Statement:
    """One statement as the gateway reads it: what it does, on what, and its literal-free text."""

    kind: str  # select / insert / update / delete, or "session"
    operations: frozenset[str]  # every DML operation it performs (data-modifying CTEs included)
    tables: tuple[str, ...]  # schema.table, user tables and catalogs alike
    columns: tuple[str, ...]  # schema.table.column of user tables
    normalized: str
    fingerprint: str
    effect: str | None = None  # session statements: begin, commit, rollback, deallocate:<name>, ...
    # The column uses to check: (candidate tables, column); "*" means every column of the table.
    uses: tuple[tuple[tuple[str, ...], str], ...] = ()
    # The uses whose values could be read other than as they are: every use but a plain column of the
    # outermost select list and a column written by INSERT / UPDATE (a filter, a computation, a
    # subquery, a join, a whole-row reference, RETURNING). `mask_columns` may appear in none of them.
    derived: tuple[tuple[tuple[str, ...], str], ...] = ()
    # UPDATE / DELETE without a WHERE clause anywhere in it (a data-modifying CTE too): every row.
    unfiltered: tuple[str, ...] = ()


def qualified(schema: str | None, name: str, default_schema: str) -> str:
    if schema:
        return f"{schema}.{name}"
    catalog = name in READABLE_CATALOGS or name.startswith("pg_")
    return f"{CATALOG_SCHEMA}.{name}" if catalog else f"{default_schema}.{name}"


def normalize(sql: str) -> str:
    """The statement's tokens with every literal as `?` and comments dropped: recordable text."""
    raw = sql.encode("utf-8")
    parts: list[str] = []
    for tok in pglast.parser.scan(sql):
        if tok.name in _COMMENT_TOKENS:
            continue
        parts.append("?" if tok.name in _CONST_TOKENS else raw[tok.start : tok.end + 1].decode("utf-8", "replace"))
    return " ".join(parts)


def analyze(sql: str, *, schema: str = "public") -> list[Statement]:
    """Every statement in `sql`, read as the server reads it; raises a JitgateError for what is refused."""
    if len(sql.encode("utf-8")) > MAX_STATEMENT_BYTES:
        raise StatementNotAllowed(f"statements longer than {MAX_STATEMENT_BYTES} bytes are refused")
    try:
        raws = pglast.parse_sql(sql)
    except ParseError:
        raise SqlNotParsed("the statement does not parse as PostgreSQL 18 SQL") from None
    except Exception:  # the parser's own limits (stack depth): refused like any unreadable statement
        raise SqlNotParsed("the statement cannot be read") from None
    raw_bytes = sql.encode("utf-8")
    out: list[Statement] = []
    for raw in raws:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(raw_bytes)
        text = raw_bytes[start:end].decode("utf-8", "replace")
        walker = _Walker(schema)
        kind, effect = walker.statement(raw.stmt)
        try:
            fingerprint = pglast.parser.fingerprint(text)
        except Exception:
            fingerprint = ""
        out.append(
            Statement(
                kind=kind,
                operations=frozenset(walker.operations),
                tables=tuple(sorted(walker.tables)),
                columns=tuple(sorted({f"{t}.{c}" for ts, c in walker.uses if c != "*" for t in ts})),
                normalized=normalize(text),
                fingerprint=fingerprint,
                effect=effect,
                uses=tuple(walker.uses),
                derived=tuple(u for i, u in enumerate(walker.uses) if i not in walker.plain),
                unfiltered=tuple(sorted(walker.unfiltered)),
            )
        )
    return out


# -- the scope check ------------------------------------------------------------------------------


def _is_catalog(table: str) -> bool:
    schema, _, name = table.partition(".")
    return schema == CATALOG_SCHEMA and name in READABLE_CATALOGS


def _granted_table(table: str, collections: Sequence[str], schema: str) -> bool:
    t_schema, _, name = table.partition(".")
    for c in collections:
        if c == "*" and t_schema == schema:
            return True
        if c == table or (t_schema == schema and c == name):
            return True
    return False


def allowed_columns(table: str, fields: Sequence[str], schema: str) -> list[str]:
    """The columns `fields` grants on `table`: bare names, `table.col` or `schema.table.col`."""
    t_schema, _, name = table.partition(".")
    out = []
    for f in fields:
        parts = f.split(".")
        if len(parts) == 1:
            out.append(f)
        elif len(parts) == 2 and parts[0] == name and t_schema == schema:
            out.append(parts[1])
        elif len(parts) == 3 and f"{parts[0]}.{parts[1]}" == table:
            out.append(parts[2])
    return sorted(set(out))


def statement_error(stmt: Statement, scope: Scope, *, schema: str = "public") -> JitgateError | None:
    """Whether a token with `scope` may run `stmt`: None, or the refusal."""
    if stmt.kind == SESSION and not stmt.operations:
        return None
    for op in sorted(stmt.operations):
        if op not in scope.operations:
            return OperationNotAllowed(f"operation {op!r} is not in this token's scope")
    for table in stmt.tables:
        if not _is_catalog(table) and not _granted_table(table, scope.collections, schema):
            return TableNotAllowed(f"table {table!r} is not in this token's scope")
    if scope.mask_columns:
        masked = _masked_use(stmt, scope.mask_columns, schema)
        if masked is not None:
            return masked
    if scope.fields is None:
        return None
    for tables, column in stmt.uses:
        for table in tables:
            if _is_catalog(table):
                continue
            allowed = allowed_columns(table, scope.fields, schema)
            if column == "*":
                if set(allowed) != {"*"}:
                    names = ", ".join(allowed) or "none"
                    return ColumnNotAllowed(f"'*' on {table} is refused: name the columns (allowed: {names})")
            elif column not in allowed and "*" not in allowed:
                return ColumnNotAllowed(f"column {column!r} of {table} is not in this token's scope")
    return None


def _masked_use(stmt: Statement, mask_columns: Sequence[str], schema: str) -> JitgateError | None:
    """A masked column used where its value could be inferred (compared, computed, in a subquery)."""
    for tables, column in stmt.derived:
        for table in tables:
            if _is_catalog(table):
                continue
            masked = allowed_columns(table, mask_columns, schema)
            if masked and (column == "*" or column in masked or "*" in masked):
                shown = f"{table}.{column}" if column != "*" else f"a whole row of {table}"
                return ColumnMasked(
                    f"{shown} is masked for this token: select the column as it is, without filtering, "
                    "sorting, joining or computing on it"
                )
    return None


# -- the walker -----------------------------------------------------------------------------------


@dataclass
class _Entry:
    alias: str
    table: str | None  # schema.table; None for a derived relation (subquery, CTE, function)


@dataclass
class _Level:
    entries: list[_Entry] = field(default_factory=list)
    ctes: set[str] = field(default_factory=set)
    outputs: set[str] = field(default_factory=set)  # select-list aliases, for ORDER BY


class _Walker:
    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.operations: set[str] = set()
        self.unfiltered: set[str] = set()  # update / delete without WHERE (data-modifying CTEs too)
        self.tables: set[str] = set()
        self.uses: list[tuple[tuple[str, ...], str]] = []
        self.plain: set[int] = set()  # indexes into `uses`: see Statement.derived
        self._plain = False  # walking a plain column of the outermost select list
        self.stack: list[_Level] = []

    def use(self, tables: tuple[str, ...], column: str, *, plain: bool = False) -> None:
        if plain:
            self.plain.add(len(self.uses))
        self.uses.append((tables, column))

    # statements

    def statement(self, node: Any) -> tuple[str, str | None]:
        if isinstance(node, ast.SelectStmt):
            self.select(node)
            return "select", None
        if isinstance(node, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
            return self.modify(node), None
        return SESSION, self.session(node)

    def session(self, stmt: Any) -> str | None:
        node: Any = stmt
        if isinstance(node, ast.TransactionStmt):
            effect = _TRANSACTIONS.get(node.kind)  # type: ignore[arg-type]
            if effect is None:
                raise StatementNotAllowed("two-phase commit is not allowed through the gateway")
            return effect
        if isinstance(node, ast.VariableSetStmt):
            self.setting(node)
            return "set"
        if isinstance(node, ast.VariableShowStmt):
            if (node.name or "").lower() not in SHOWABLE and not is_identity_setting(node.name or ""):
                raise SettingNotAllowed(f"SHOW {node.name} is not allowed")
            return "show"
        if isinstance(node, ast.DiscardStmt):
            return "discard"
        if isinstance(node, ast.DeallocateStmt):
            return "deallocate_all" if node.isall or node.name is None else f"deallocate:{node.name}"
        what = {
            ast.CopyStmt: "COPY", ast.DoStmt: "DO", ast.PrepareStmt: "PREPARE", ast.ExecuteStmt: "EXECUTE",
            ast.CreateFunctionStmt: "CREATE FUNCTION", ast.AlterSystemStmt: "ALTER SYSTEM",
        }.get(type(node), type(node).__name__.removesuffix("Stmt"))
        raise StatementNotAllowed(f"{what} statements are not allowed through the gateway")

    def setting(self, node: Any) -> None:
        kind = node.kind
        if kind == enums.VariableSetKind.VAR_RESET_ALL:
            return
        name = (node.name or "").lower()
        if kind == enums.VariableSetKind.VAR_SET_MULTI:
            if name in ("transaction", "session characteristics"):
                return
            raise SettingNotAllowed(f"SET {node.name} is not allowed")
        if name == "search_path":
            raise SettingNotAllowed("the search_path is pinned by the gateway: use schema-qualified names")
        if is_identity_setting(name):
            raise SettingNotAllowed(f"{node.name} is set by the gateway (the token's identity) and cannot be changed")
        if name not in SETTINGS:
            raise SettingNotAllowed(f"setting {node.name!r} may not be changed through the gateway")
        if name in _FIXED and kind == enums.VariableSetKind.VAR_SET_VALUE:
            values = [getattr(getattr(a, "val", None), "sval", None) for a in node.args or ()]
            if len(values) != 1 or str(values[0]).lower() not in _FIXED[name]:
                raise SettingNotAllowed(f"{node.name} must stay {_FIXED[name][0]}")
        for arg in node.args or ():
            if not isinstance(arg, ast.A_Const | ast.TypeCast):
                raise SettingNotAllowed("setting values must be constants")

    def modify(self, node: Any) -> str:
        op = {ast.InsertStmt: "insert", ast.UpdateStmt: "update", ast.DeleteStmt: "delete"}[type(node)]
        self.operations.add(op)
        level = _Level()
        self.stack.append(level)
        try:
            if node.withClause is not None:
                self.with_clause(node.withClause, level)
            target = self.target(node.relation)
            if isinstance(node, ast.InsertStmt):
                if node.cols:
                    for col in node.cols:
                        if col.indirection:
                            raise StatementNotAllowed("INSERT into a sub-field or element is not allowed")
                        self.use((target,), col.name, plain=True)
                else:
                    self.use((target,), "*", plain=True)
                if node.selectStmt is not None:
                    self.select(node.selectStmt)
                if node.onConflictClause is not None:
                    if node.onConflictClause.action != enums.OnConflictAction.ONCONFLICT_NOTHING:
                        raise StatementNotAllowed("ON CONFLICT DO UPDATE is not allowed through the gateway")
                    infer = node.onConflictClause.infer
                    if infer is not None:
                        if infer.conname or infer.whereClause is not None:
                            raise StatementNotAllowed("ON CONFLICT ON CONSTRAINT is not allowed through the gateway")
                        for elem in infer.indexElems or ():
                            if elem.name is None:
                                raise StatementNotAllowed("ON CONFLICT on an expression is not allowed")
                            self.uses.append(((target,), elem.name))
                level.entries.append(_Entry(_alias(node.relation), target))
            else:
                level.entries.append(_Entry(_alias(node.relation), target))
                for item in (node.fromClause if isinstance(node, ast.UpdateStmt) else node.usingClause) or ():
                    self.from_item(item, level)
                if isinstance(node, ast.UpdateStmt):
                    for res in node.targetList or ():
                        if res.indirection or isinstance(res.val, ast.MultiAssignRef):
                            raise StatementNotAllowed("UPDATE of sub-fields or column lists is not allowed")
                        self.use((target,), res.name, plain=True)
                        self.expr(res.val)
                if node.whereClause is not None:
                    self.expr(node.whereClause)
                else:
                    self.unfiltered.add(op)  # every row: held for a human (jitgate.pghold)
            returning = node.returningClause
            if returning is not None:
                if returning.options:
                    raise StatementNotAllowed("RETURNING WITH (OLD/NEW AS ...) is not allowed")
                level.entries += [_Entry("old", target), _Entry("new", target)]
                for res in returning.exprs or ():
                    self.expr(res)
        finally:
            self.stack.pop()
        return op

    def target(self, rv: Any) -> str:
        if rv.catalogname:
            raise TableNotAllowed("database-qualified names are not allowed")
        table = qualified(rv.schemaname, rv.relname, self.schema)
        if rv.alias is not None and rv.alias.colnames:
            raise StatementNotAllowed("column aliases on a table are not allowed (they rename granted columns)")
        if table.startswith(CATALOG_SCHEMA + "."):
            raise TableNotAllowed("catalogs are read only")
        self.tables.add(table)
        return table

    def with_clause(self, wc: Any, level: _Level) -> None:
        for cte in wc.ctes or ():
            if wc.recursive:
                level.ctes.add(cte.ctename)
            if cte.search_clause is not None or cte.cycle_clause is not None:
                raise StatementNotAllowed("SEARCH / CYCLE clauses are not allowed")
            query = cte.ctequery
            if isinstance(query, ast.SelectStmt):
                self.select(query)
            elif isinstance(query, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
                self.modify(query)
            else:
                raise StatementNotAllowed("this WITH query is not allowed")
            level.ctes.add(cte.ctename)

    def select(self, node: Any) -> None:
        outermost = not self.stack and node.op == _SETOP_NONE
        level = _Level()
        self.stack.append(level)
        try:
            if node.withClause is not None:
                self.with_clause(node.withClause, level)
            if node.intoClause is not None:
                raise StatementNotAllowed("SELECT INTO creates a table: not allowed")
            if node.op != _SETOP_NONE:
                self.select(node.larg)
                self.select(node.rarg)
            for item in node.fromClause or ():
                self.from_item(item, level)
            for row in node.valuesLists or ():
                self.exprs(row)
            for res in node.targetList or ():
                if res.name:
                    level.outputs.add(res.name)
            for res in node.targetList or ():
                self._plain = outermost and isinstance(res.val, ast.ColumnRef)
                try:
                    self.expr(res)
                finally:
                    self._plain = False
            for name in ("whereClause", "havingClause", "limitCount", "limitOffset"):
                value = getattr(node, name)
                if value is not None:
                    self.expr(value)
            self.exprs(node.groupClause)
            self.exprs([d for d in node.distinctClause or () if d is not None])
            for win in node.windowClause or ():
                self.expr(win)
            for sort in node.sortClause or ():
                key: Any = sort.node
                fields = key.fields if isinstance(key, ast.ColumnRef) else None
                if fields and len(fields) == 1 and _name(fields[0]) in level.outputs:
                    continue  # ORDER BY a select-list alias
                self.expr(sort)
            if node.lockingClause:
                self.operations.add("update")
            if any(e.table is not None and not _is_catalog(e.table) for e in level.entries):
                self.operations.add("select")
        finally:
            self.stack.pop()

    def from_item(self, node: Any, level: _Level) -> None:
        item: Any = node
        if isinstance(item, ast.RangeVar):
            alias = _alias(item)
            if item.schemaname is None and any(item.relname in lv.ctes for lv in self.stack):
                level.entries.append(_Entry(alias, None))  # a CTE: its query was checked where defined
                return
            if item.catalogname:
                raise TableNotAllowed("database-qualified names are not allowed")
            if item.alias is not None and item.alias.colnames:
                raise StatementNotAllowed("column aliases on a table are not allowed (they rename granted columns)")
            table = qualified(item.schemaname, str(item.relname), self.schema)
            self.tables.add(table)
            level.entries.append(_Entry(alias, table))
        elif isinstance(item, ast.RangeSubselect):
            self.select(item.subquery)
            if item.alias is None:
                raise StatementNotAllowed("a subquery in FROM needs an alias")
            level.entries.append(_Entry(str(item.alias.aliasname), None))
        elif isinstance(item, ast.RangeFunction):
            if item.is_rowsfrom:
                raise StatementNotAllowed("ROWS FROM is not allowed")
            for pair in item.functions or ():
                for fn in pair:
                    if isinstance(fn, ast.Node):
                        self.expr(fn)
            level.entries.append(_Entry(str(item.alias.aliasname) if item.alias else "", None))
        elif isinstance(item, ast.JoinExpr):
            if item.alias is not None:
                raise StatementNotAllowed("an alias on a join is not allowed: qualify with the tables' names")
            self.from_item(item.larg, level)
            self.from_item(item.rarg, level)
            for name in item.usingClause or ():
                self.column((_name(name),))
            if item.quals is not None:
                self.expr(item.quals)
        else:
            raise StatementNotAllowed(f"{type(item).__name__} in FROM is not allowed")

    # expressions

    def exprs(self, nodes: Iterable[Any] | None) -> None:
        for n in nodes or ():
            self.expr(n)

    def expr(self, node: Any) -> None:
        if node is None:
            return
        if isinstance(node, tuple | list):
            self.exprs(node)
            return
        if isinstance(node, ast.ColumnRef):
            self.column(tuple(node.fields or ()))
            return
        if isinstance(node, ast.FuncCall):
            self.function(node.funcname or ())
            self.exprs(node.args)
            self.exprs(node.agg_order)
            self.expr(node.agg_filter)
            self.expr(node.over)
            return
        if isinstance(node, ast.A_Expr):
            self.operator(node.name or ())
            self.expr(node.lexpr)
            self.expr(node.rexpr)
            return
        if isinstance(node, ast.SubLink):
            self.expr(node.testexpr)
            if node.operName:
                self.operator(node.operName)
            self.select(node.subselect)
            return
        if isinstance(node, ast.TypeCast):
            self.expr(node.arg)
            return
        if isinstance(node, ast.SortBy) and node.useOp:
            self.operator(node.useOp)
        if isinstance(node, ast.CollateClause):
            self.expr(node.arg)
            return
        if isinstance(node, _PLAIN):
            for child in _children(node):
                self.expr(child)
            return
        raise StatementNotAllowed(f"{type(node).__name__} is not allowed in a statement through the gateway")

    def function(self, names: Sequence[Any]) -> None:
        parts = [_name(n) for n in names]
        if len(parts) == 2 and parts[0] == CATALOG_SCHEMA:
            parts = parts[1:]
        if len(parts) != 1 or parts[0] not in FUNCTIONS:  # the parser folded unquoted names already
            raise FunctionNotAllowed(f"function {'.'.join(parts)} is not allowed through the gateway")

    def operator(self, names: Sequence[Any]) -> None:
        parts = [_name(n) for n in names]
        if len(parts) == 2 and parts[0] == CATALOG_SCHEMA:
            parts = parts[1:]
        if len(parts) != 1 or parts[0] not in OPERATORS:
            raise FunctionNotAllowed(f"operator {'.'.join(parts)} is not allowed through the gateway")

    def _visible(self) -> Iterator[_Entry]:
        for level in reversed(self.stack):
            yield from level.entries

    def column(self, fields: tuple[Any, ...]) -> None:
        names = [None if isinstance(f, ast.A_Star) else _name(f) for f in fields]
        if names[-1] is None and len(names) == 1:  # bare *: every relation of the innermost FROM
            for entry in self.stack[-1].entries if self.stack else ():
                if entry.table is not None:
                    self.use((entry.table,), "*", plain=self._plain)
            return
        found: _Entry | None = None
        column: str | None
        if len(names) >= 2:
            head = names[0]
            if len(names) >= 3:
                two = f"{names[0]}.{names[1]}"
                found = next((e for e in self._visible() if e.table == two and e.alias == names[1]), None)
                if found is not None:
                    names = names[1:]
            if found is None:
                found = next((e for e in self._visible() if e.alias == head), None)
            if found is None:
                raise StatementNotAllowed(f"{head!s} names no relation of this statement")
            column = names[1]
            if found.table is not None:
                self.use((found.table,), column if column is not None else "*", plain=self._plain)
            return
        column = names[0]
        assert column is not None
        bases = tuple(e.table for e in self._visible() if e.table is not None)
        # A bare name that is a relation's alias may be the whole row of that relation.
        for e in self._visible():
            if e.alias == column and e.table is not None:
                self.use((e.table,), "*")  # a whole row as one value: never plain
        if bases:
            self.use(tuple(dict.fromkeys(bases)), column, plain=self._plain)


def _alias(rv: Any) -> str:
    return str(rv.alias.aliasname if rv.alias else rv.relname)


def _name(node: Any) -> str:
    if isinstance(node, ast.String):
        return str(node.sval)
    raise StatementNotAllowed("unexpected name in a statement")


def _children(node: Any) -> Iterator[Any]:
    for slot in node.__slots__:
        if slot == "location" or slot.endswith("_location"):
            continue
        value = getattr(node, slot, None)
        if isinstance(value, ast.Node | tuple | list):
            yield value
