"""A bounded, ordered, on-disk message queue (sqlite3 from the standard library) for the MQTT
publisher: messages wait here while the broker is away and leave, oldest first, once it is back.

One thread owns a spool (sqlite connections are not shared). ``push`` refuses a message when
``max_messages`` wait already (the caller counts it as dropped); ``peek`` reads the oldest ones,
``pop`` deletes them once handed to the client. Rows survive the process: a spool reopened at the
same path delivers what a previous run left.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge.core.errors import ConfigError

if TYPE_CHECKING:  # annotations only: tuple[...] is not subscriptable at run time on Python 3.8
    Message = tuple[str, bytes, int, bool]
    """(topic, payload, qos, retain)"""


class Spool:
    """``Spool(path, max_messages)``: push / peek / pop in order; ``len()`` messages waiting."""

    def __init__(self, path: str | Path, max_messages: int) -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None)
            # WAL + NORMAL: no fsync per insert; a power cut may lose the last ones, never corrupt
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER, retain INTEGER)"
            )
            (self._count,) = self._db.execute("SELECT COUNT(*) FROM spool").fetchone()
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(
                f"MQTT spool '{self.path}' cannot be opened ({e}); give --mqtt-spool a "
                "writable folder"
            ) from e

    def __len__(self) -> int:
        return int(self._count)

    def push(self, messages: Sequence[Message]) -> int:
        """Append in order as many as fit; returns how many did not fit (dropped)."""
        room = max(0, self.max_messages - self._count)
        keep = messages[:room]
        if keep:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO spool (topic, payload, qos, retain) VALUES (?, ?, ?, ?)",
                    [(t, p, q, int(r)) for t, p, q, r in keep],
                )
            self._count += len(keep)
        return len(messages) - len(keep)

    def push_front(self, messages: Sequence[Message]) -> None:
        """Put messages back before every waiting one, in their order (they are older: handed
        to the client, never acknowledged). Not bounded: they were counted once already."""
        if not messages:
            return
        (low,) = self._db.execute("SELECT COALESCE(MIN(seq), 1) FROM spool").fetchone()
        first = int(low) - len(messages)
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO spool (seq, topic, payload, qos, retain) VALUES (?, ?, ?, ?, ?)",
                [(first + i, t, p, q, int(r)) for i, (t, p, q, r) in enumerate(messages)],
            )
        self._count += len(messages)

    def peek(self, n: int) -> list[tuple[int, Message]]:
        """The oldest ``n`` messages with their sequence numbers."""
        rows = self._db.execute(
            "SELECT seq, topic, payload, qos, retain FROM spool ORDER BY seq LIMIT ?", (n,)
        ).fetchall()
        return [(s, (t, bytes(p), int(q), bool(r))) for s, t, p, q, r in rows]

    def pop(self, upto_seq: int) -> None:
        """Delete every message up to and including ``upto_seq``."""
        cur = self._db.execute("DELETE FROM spool WHERE seq <= ?", (upto_seq,))
        self._count -= cur.rowcount

    def close(self) -> None:
        self._db.close()
