"""SQLAlchemy 2 engine, sessions and the kit's own tables (outbox, inbox, idempotency keys).

The same code runs on PostgreSQL (production, tests) and SQLite (``make run``); where the
two differ (NOTIFY, pragmas, timestamps) the difference is handled here, once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# Stable constraint names so Alembic migrations are reproducible on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Timezone-aware now in UTC (the only clock the kit uses)."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps.

    SQLite stores no offset; without this, values read back from SQLite would be naive and
    compare differently from PostgreSQL's.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def new_metadata() -> MetaData:
    """A MetaData with the kit's naming convention and the kit's tables already on it."""
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    add_kit_tables(metadata)
    return metadata


def add_kit_tables(metadata: MetaData) -> None:
    """Define the outbox, inbox and idempotency-key tables on ``metadata``.

    Their DDL is applied by the kit's own Alembic branch (``crm_kit/migrations/versions``),
    which every service's migrations run alongside their own.
    """
    Table(
        "outbox",
        metadata,
        # Increasing ids give the relay the commit order of one service's events.
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSON, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("sent_at", UTCDateTime, nullable=True),
        Index("ix_outbox_unsent", "id", postgresql_where="sent_at IS NULL", sqlite_where="sent_at IS NULL"),
    )
    Table(
        "inbox",
        metadata,
        Column("consumer", String(200), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("topic", String(200), nullable=False),
        Column("processed_at", UTCDateTime, nullable=False),
    )
    Table(
        # Where each consumer is in each partition, committed with the effects: a fresh
        # database has no rows, so its consumers replay their topics from offset 0.
        "consumer_offsets",
        metadata,
        Column("consumer", String(200), primary_key=True),
        Column("topic", String(200), primary_key=True),
        Column("partition", Integer, primary_key=True),
        Column("next_offset", BigInteger, nullable=False),
    )
    Table(
        # The relay's next offset in each partition it delivered to, written when it marks rows
        # sent: with no unsent row up to id P, these offsets cover every event up to P.
        "relay_positions",
        metadata,
        Column("topic", String(200), primary_key=True),
        Column("partition", Integer, primary_key=True),
        Column("next_offset", BigInteger, nullable=False),
    )
    Table(
        "idempotency_keys",
        metadata,
        Column("principal", String(200), primary_key=True),
        Column("key", String(200), primary_key=True),
        Column("method", String(10), nullable=False),
        Column("path", String(2000), nullable=False),
        Column("request_hash", String(64), nullable=False),
        Column("status", Integer, nullable=False),
        Column("headers", JSON, nullable=False),
        Column("body", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create the engine for ``url`` with the settings each backend needs.

    SQLite gets WAL, a busy timeout and enforced foreign keys (several processes share the
    file in ``make run``); PostgreSQL gets pre-ping so a restarted server costs one retry,
    not a burst of errors.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy issue BEGIN itself so "BEGIN IMMEDIATE" below takes effect.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Take the write lock up front: a deferred transaction that later writes can
            # fail with "database is locked" instead of waiting for the busy timeout.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(url, **kwargs)


# Writers that hold back rows until the transaction commits (the unit of work's events) register
# here, so a request's answer can have them written first and name what it wrote.
_PENDING_WRITERS = "crm_kit.pending_writers"


def hold_back_writes(session: Session, write: Callable[[], None]) -> None:
    """Register ``write`` as something ``session`` holds back until its commit (once per writer)."""
    writers = session.info.setdefault(_PENDING_WRITERS, [])
    if write not in writers:
        writers.append(write)


def write_held_back(session: Session) -> None:
    """Write now what ``session`` holds back (in its transaction: a rollback still takes it back)."""
    for write in session.info.get(_PENDING_WRITERS, ()):
        write()


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached or dropped the connection (or
    another transient condition PostgreSQL reports as operational: a deadlock, a shutdown): the
    web edge answers 503 to it, a consumer waits. psycopg reports a connection a restart closed as
    an ``InterfaceError`` or an invalidated ``DBAPIError``, not only an ``OperationalError``."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


def is_postgres(engine_or_session: Engine | Session) -> bool:
    """True when talking to PostgreSQL (LISTEN/NOTIFY, SKIP LOCKED available)."""
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "postgresql"


def insert_on_conflict(session: Session, table: Table) -> Any:
    """``INSERT`` into ``table`` in the session's dialect, which has ``on_conflict_do_update`` and
    ``on_conflict_do_nothing`` (PostgreSQL, and SQLite for ``make run``)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql.insert if is_postgres(session) else sqlite.insert)(table)


class Database:
    """An engine and its session factory; one per process."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed if the block succeeds, rolled back if not."""
        with self.sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        """Raise if the database cannot answer a trivial query (readiness)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()
