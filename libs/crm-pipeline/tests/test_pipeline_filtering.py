"""The filter / order_by language of GET /v1/{records}: the same queries on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    create_engine,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from crm_pipeline.filtering import MAX_LENGTH, FilterError, FilterField, parse_filter, parse_order_by

metadata = MetaData()
deals = Table(
    "deals", metadata,
    Column("id", String(36), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("stage_id", String(36), nullable=False),
    Column("priority_id", String(36)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("due_on", Date),
    Column("amount", Numeric(12, 2)),
    Column("probability", Integer),
    Column("closed", Boolean, nullable=False),
    Column("attribute_ids", JSON(none_as_null=True)),
)

FIELDS = {
    "id": FilterField(deals.c.id, "id"),
    "title": FilterField(deals.c.title, "string"),
    "stage_id": FilterField(deals.c.stage_id, "id"),
    "priority_id": FilterField(deals.c.priority_id, "id"),
    "created_at": FilterField(deals.c.created_at, "datetime"),
    "due_on": FilterField(deals.c.due_on, "date"),
    "amount": FilterField(deals.c.amount, "number"),
    "probability": FilterField(deals.c.probability, "integer"),
    "closed": FilterField(deals.c.closed, "bool"),
    "attribute_id": FilterField(deals.c.attribute_ids, "id_list"),
    # A computed field through build(): it receives the operator and the checked value.
    "title.length": FilterField(None, "integer", build=lambda op, v: func.length(deals.c.title) == v
                                if op == "=" else func.length(deals.c.title) > v),
}

UTC = dt.UTC


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


ROWS = [
    # id, title, stage, priority, created_at, due_on, amount, probability, closed, attribute_ids
    ("r1", "alpha", "s1", "p1", "2026-01-01T00:00:00Z", "2026-02-01", "100.00", 10, False, ["a1", "a2"]),
    ("r2", "beta", "s1", "p2", "2026-01-15T12:00:00Z", "2026-03-01", "250.50", 50, False, ["a2"]),
    ("r3", "gamma", "s2", None, "2025-12-31T23:00:00Z", None, None, None, True, []),
    ("r4", 'say "hi"', "s2", "p1", "2026-02-01T08:30:00Z", "2026-02-15", "1000", 90, True, ["a3"]),
    ("r5", "back\\slash", "s3", "p3", "2025-06-30T10:00:00Z", "2025-07-01", "-20.5", 0, False, None),
    ("r6", "delta", "s3", None, "2026-03-01T00:00:00Z", "2026-03-31", "0", 100, False, ["a1"]),
    ("r7", "epsilon", "s1", "p3", "2025-12-31T22:59:59Z", "2026-01-01", "99.99", 25, True, ["a1", "a3"]),
    ("r8", "zeta", "s2", "p2", "2026-01-10T00:00:00Z", None, "5000", 75, False, []),
    ("r9", "eta", "s4", "p1", "2026-04-01T00:00:00Z", "2026-04-30", "12.50", None, False, ["a4"]),
    ("r10", "theta", "s4", None, "2026-01-01T00:00:01Z", "2026-01-02", "100", 10, True, None),
]
ALL = {row[0] for row in ROWS}


@pytest.fixture
def engine(any_db_url: str) -> Iterator[Engine]:
    engine = create_engine(any_db_url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(deals.insert(), [
            {"id": r[0], "title": r[1], "stage_id": r[2], "priority_id": r[3], "created_at": _at(r[4]),
             "due_on": dt.date.fromisoformat(r[5]) if r[5] else None, "amount": Decimal(r[6]) if r[6] else None,
             "probability": r[7], "closed": r[8], "attribute_ids": r[9]} for r in ROWS])
    yield engine
    engine.dispose()


def _check(engine: Engine, cases: list[tuple[str, set[str]]]) -> None:
    """Run every case and report all mismatches at once (one database per dialect, not per case)."""
    wrong = []
    with engine.connect() as conn:
        for text, expected in cases:
            got = set(conn.scalars(select(deals.c.id).where(parse_filter(text, FIELDS))))
            if got != expected:
                wrong.append(f"{text!r}: expected {sorted(expected)}, got {sorted(got)}")
    assert not wrong, "\n".join(wrong)


def test_each_operator_and_type(engine: Engine) -> None:
    _check(engine, [
        ('id = "r1"', {"r1"}),
        ('stage_id = "s1"', {"r1", "r2", "r7"}),
        ('stage_id != "s1"', ALL - {"r1", "r2", "r7"}),
        ('title = "alpha"', {"r1"}),
        ('title != "alpha"', ALL - {"r1"}),
        ('title < "beta"', {"r1", "r5"}),
        ('title <= "beta"', {"r1", "r2", "r5"}),
        ('title > "theta"', {"r8"}),
        ('title >= "theta"', {"r8", "r10"}),
        ('created_at >= "2026-01-01T00:00:00Z"', {"r1", "r2", "r4", "r6", "r8", "r9", "r10"}),
        ('created_at > "2026-01-01T00:00:00Z"', {"r2", "r4", "r6", "r8", "r9", "r10"}),
        ('created_at = "2026-01-01T00:00:00Z"', {"r1"}),
        # Offsets are honoured: 01:00+02:00 is 23:00Z the day before.
        ('created_at < "2026-01-01T01:00:00+02:00"', {"r5", "r7"}),
        ('created_at <= "2026-01-01T01:00:00+02:00"', {"r3", "r5", "r7"}),
        ('created_at = "2025-12-31T18:00:00-05:00"', {"r3"}),
        ('due_on = "2026-02-15"', {"r4"}),
        ('due_on < "2026-01-02"', {"r5", "r7"}),
        ('due_on >= "2026-03-31"', {"r6", "r9"}),
        ('amount = 100', {"r1", "r10"}),
        ('amount > 99.99', {"r1", "r2", "r4", "r8", "r10"}),
        ('amount >= 99.99', {"r1", "r2", "r4", "r7", "r8", "r10"}),
        ('amount < 0', {"r5"}),
        ('amount <= -20.5', {"r5"}),
        ('probability = 10', {"r1", "r10"}),
        ('probability >= 90', {"r4", "r6"}),
        ('probability < 10', {"r5"}),
        ('probability > -1', ALL - {"r3", "r9"}),
        ('closed = true', {"r3", "r4", "r7", "r10"}),
        ('closed != true', ALL - {"r3", "r4", "r7", "r10"}),
        ('closed = FALSE', ALL - {"r3", "r4", "r7", "r10"}),
        ('title.length = 4', {"r2", "r8"}),
        ('title.length > 7', {"r4", "r5"}),
        ("", ALL),
        ("   ", ALL),
    ])


def test_precedence_parentheses_and_keywords(engine: Engine) -> None:
    _check(engine, [
        # NOT > AND > OR
        ('stage_id = "s1" OR stage_id = "s2" AND closed = true', {"r1", "r2", "r7", "r3", "r4"}),
        ('(stage_id = "s1" OR stage_id = "s2") AND closed = true', {"r3", "r4", "r7"}),
        ('NOT stage_id = "s1" AND closed = true', {"r3", "r4", "r10"}),
        ('NOT (stage_id = "s1" AND closed = true)', ALL - {"r7"}),
        ('NOT stage_id = "s1" OR stage_id = "s1"', ALL),
        ('NOT NOT stage_id = "s1"', {"r1", "r2", "r7"}),
        ('stage_id = "s4" and (priority_id = "p1" or created_at >= "2026-01-01T00:00:00Z")', {"r9", "r10"}),
        ('stage_id = "s1" aNd probability = 10 Or id = "r9"', {"r1", "r9"}),
        ('not(closed = true)', ALL - {"r3", "r4", "r7", "r10"}),
        ('((((id = "r1"))))', {"r1"}),
        ('id = "r1" OR id = "r2" OR id = "r3" AND id = "r3"', {"r1", "r2", "r3"}),
        ('stage_id = "s1"\n  AND\tprobability > 10', {"r2", "r7"}),
    ])


def test_null_and_two_valued_not(engine: Engine) -> None:
    no_priority = {"r3", "r6", "r10"}
    _check(engine, [
        ("priority_id = null", no_priority),
        ("priority_id != NULL", ALL - no_priority),
        ("amount = null", {"r3"}),
        ("due_on = null AND probability != null", {"r8"}),
        ("attribute_id = null", {"r5", "r10"}),
        # A null field never equals a value, so it always differs from it, also through NOT.
        ('priority_id = "p1"', {"r1", "r4", "r9"}),
        ('priority_id != "p1"', ALL - {"r1", "r4", "r9"}),
        ('NOT priority_id = "p1"', ALL - {"r1", "r4", "r9"}),
        ("NOT probability > 10", {"r1", "r3", "r5", "r9", "r10"}),
        ("probability > 10 OR NOT probability > 10", ALL),
    ])


def test_id_list_contains_and_not_contains(engine: Engine) -> None:
    _check(engine, [
        ('attribute_id = "a1"', {"r1", "r6", "r7"}),
        ('attribute_id = "a2"', {"r1", "r2"}),
        ('attribute_id = "a1" AND attribute_id = "a2"', {"r1"}),
        ('attribute_id = "zz"', set()),
        ('attribute_id != "a1"', ALL - {"r1", "r6", "r7"}),
        ('NOT attribute_id = "a1"', ALL - {"r1", "r6", "r7"}),
        ('attribute_id != "a1" AND attribute_id != "a3"', {"r2", "r3", "r5", "r8", "r9", "r10"}),
    ])


def test_escapes_and_injection_attempts_are_plain_values(engine: Engine) -> None:
    _check(engine, [
        (r'title = "say \"hi\""', {"r4"}),
        (r'title = "back\\slash"', {"r5"}),
        ("title = \"x' OR 1=1 --\"", set()),
        ("title = \"alpha'; DROP TABLE deals; --\"", set()),
        ('id = "r1\\" OR id = \\"r2"', set()),
    ])
    with engine.connect() as conn:  # the table survived
        assert conn.scalar(select(func.count()).select_from(deals)) == len(ROWS)


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=["postgresql", "sqlite"])
def test_values_are_bound_parameters(dialect: object) -> None:
    evil = "x' OR 1=1 --"
    clause = parse_filter(f'title = "{evil}" OR attribute_id = "{evil}" OR created_at > "2026-01-01T00:00:00Z"',
                          FIELDS)
    compiled = clause.compile(dialect=dialect)  # type: ignore[arg-type]
    assert "1=1" not in str(compiled) and "2026" not in str(compiled)
    assert list(compiled.params.values()).count(evil) == 2
    assert dt.datetime(2026, 1, 1, tzinfo=UTC) in compiled.params.values()


def _error(text: str) -> FilterError:
    with pytest.raises(FilterError) as info:
        parse_filter(text, FIELDS)
    return info.value


@pytest.mark.parametrize(("text", "position", "message"), [
    ('stage_id = AND x', 11, "Expected a value after '=' at column 12"),
    ('stage_id = "s1" garbage', 16, "Expected AND, OR or the end of the filter at column 17, found 'garbage'"),
    ('stage_id = "s1" )', 16, "Unmatched ')' at column 17"),
    ('(stage_id = "s1" OR (id = "r1")', 31, "Missing ')' to close the '(' at column 1"),
    ('stage_id =', 10, "Expected a value after '=' at column 11, found the end of the filter"),
    ('stage_id <= ', 11, "Expected a value after '<=' at column 12"),
    ('stage_id = s1', 11, "Expected a value after '=' at column 12, found 's1'; text values need double quotes"),
    ('stage_id "s1"', 9, "Expected an operator (=, !=, <, <=, >, >=) after 'stage_id' at column 10"),
    ('stage_id = "s1" AND', 19, "Expected a field name, NOT or '(' at column 20"),
    ('title = "open', 8, "Unterminated string at column 9"),
    ('title ~ "x"', 6, "Unexpected character '~' at column 7"),
    ('title = "a\\tb"', 10, "Unknown escape '\\t' in a string"),
    ('colour = "red"', 0, "Unknown field 'colour'; allowed: amount, attribute_id, closed, created_at, due_on, id"),
    ('closed = true AND amount = "12"', 27, "'amount' needs a number such as 1500 or 12.50"),
    ('probability = 1.5', 14, "'probability' needs a whole number such as 42"),
    ('closed = 1', 9, "'closed' needs true or false"),
    ('title = 12', 8, "'title' needs a quoted string"),
    ('stage_id = 12', 11, "'stage_id' needs a quoted id"),
    ('created_at >= "2026-01-01"', 14, "'created_at' needs an RFC 3339 time such as \"2026-01-01T00:00:00Z\""),
    ('created_at >= "2026-01-01T00:00:00"', 14, "'created_at' needs an RFC 3339 time"),
    ('created_at >= "2026-02-30T00:00:00Z"', 14, "'created_at' needs an RFC 3339 time"),
    ('due_on = "01/02/2026"', 9, "'due_on' needs a date such as \"2026-01-01\""),
    ('stage_id < "s1"', 9, "'stage_id' can only be compared with = or !=, not '<'"),
    ('attribute_id >= "a1"', 13, "'attribute_id' can only be compared with = or !="),
    ('closed > false', 7, "'closed' can only be compared with = or !="),
    ('amount < null', 7, "null can only be compared with = or !=, not '<'"),
    ('id = "r1" AND\nNOT colour = "x"', 18, "Unknown field 'colour'"),
])
def test_errors_point_at_the_problem(text: str, position: int, message: str) -> None:
    err = _error(text)
    assert err.message.startswith(message), err.message
    assert str(err) == err.message
    assert err.position == position
    assert isinstance(err, ValueError)
    # The caret sits under the position within its line.
    excerpt, caret = err.pointer().split("\n")
    assert caret == " " * (err.column - 1) + "^"
    assert excerpt == text.split("\n")[err.line - 1]


def test_pointer_and_line_column() -> None:
    err = _error("stage_id = AND x")
    assert err.pointer() == "stage_id = AND x\n           ^"
    assert (err.line, err.column) == (1, 12)
    err = _error('id = "r1"\n  AND nope = "x"')
    assert (err.position, err.line, err.column) == (16, 2, 7)
    assert err.pointer() == '  AND nope = "x"\n      ^'
    long = " OR ".join(['title = "x"'] * 20) + " OR )"
    err = _error(long)
    excerpt, caret = err.pointer().split("\n")
    assert excerpt.startswith("...") and len(excerpt) <= 70 and excerpt.endswith(")")
    assert excerpt[len(caret) - 1] == ")" and caret.endswith("^")


def test_limits() -> None:
    err = _error('title = "' + "x" * MAX_LENGTH + '"')
    assert err.message.startswith("The filter is too long") and err.position == MAX_LENGTH
    parse_filter("(" * 20 + 'title = "x"' + ")" * 20, FIELDS)
    err = _error("(" * 21 + 'title = "x"' + ")" * 21)
    assert err.message.startswith("The filter nests too deeply") and err.position == 20
    err = _error("NOT " * 21 + 'title = "x"')
    assert "nests too deeply" in err.message and err.position == 80
    err = _error("(" * 900 + 'title = "x"' + ")" * 900)  # deep but short: no RecursionError
    assert "nests too deeply" in err.message
    parse_filter(" OR ".join(['title = "x"'] * 50), FIELDS)
    terms = ['title = "x"'] * 51
    err = _error(" AND ".join(terms))
    assert err.message.startswith("The filter has too many comparisons") and err.position == 50 * 16


def test_field_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown filter field type"):
        FilterField(deals.c.id, "uuid")
    with pytest.raises(ValueError, match="needs a column or a build"):
        FilterField(None, "id")


ORDERABLE = {"modified_at": deals.c.created_at, "created_at": deals.c.created_at, "title": deals.c.title,
             "stage.index": deals.c.stage_id}


def test_order_by() -> None:
    assert parse_order_by("modified_at desc", ORDERABLE) == [("modified_at", deals.c.created_at, True)]
    assert parse_order_by("stage.index, title desc", ORDERABLE) == [
        ("stage.index", deals.c.stage_id, False), ("title", deals.c.title, True)]
    assert parse_order_by("  title  ASC ,created_at DESC ", ORDERABLE) == [
        ("title", deals.c.title, False), ("created_at", deals.c.created_at, True)]
    assert parse_order_by("", ORDERABLE) == []


def test_order_by_sorts_on_both_databases(engine: Engine) -> None:
    order = parse_order_by("stage.index desc, title", ORDERABLE)
    query = select(deals.c.id).order_by(*(col.desc() if desc else col.asc() for _, col, desc in order))
    with engine.connect() as conn:
        assert list(conn.scalars(query)) == ["r9", "r10", "r5", "r6", "r3", "r4", "r8", "r1", "r2", "r7"]


@pytest.mark.parametrize(("text", "position", "message"), [
    ("colour", 0, "Cannot order by 'colour'; allowed: created_at, modified_at, stage.index, title"),
    ("title, Title", 7, "Cannot order by 'Title'"),
    ("title desc, title", 12, "'title' appears twice in order_by"),
    ("title sideways", 6, "Expected asc or desc after 'title' at column 7"),
    ("title desc please", 11, "Expected ',' or the end of order_by at column 12"),
    ("title,", 6, "Expected a field name at column 7"),
    (",title", 0, "Expected a field name at column 1"),
    ("title;drop", 0, "Cannot order by 'title;drop'"),
    ("x" * (MAX_LENGTH + 1), MAX_LENGTH, "order_by is too long"),
])
def test_order_by_errors(text: str, position: int, message: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_order_by(text, ORDERABLE)
    assert info.value.message.startswith(message), info.value.message
    assert info.value.position == position
