"""The gallery's metadata in SQLite (standard library): one row per image, and the gallery's state.

Tables:

* ``meta(key, value)``: JSON values: ``generation`` (bumped by every committed change),
  ``rows`` (vector rows committed in ``vectors.f32``), ``dim``, ``model``, ``index``;
* ``images(row, path, rel, camera, size, mtime, sha256, added, generation)``: one live image
  per path; ``row`` is its vector's row in ``vectors.f32`` and in the index.  A row whose
  image was pruned or re-embedded is no longer here ("dead") and is filtered out of searches;
* ``segments(file, first_row, num_rows, generation)``: the index files, each over a range of rows.

Every change is one SQLite transaction: the files it refers to are written (and synced)
before it commits, so the committed state always names complete files.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    row INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, rel TEXT NOT NULL, camera TEXT NOT NULL,
    size INTEGER NOT NULL, mtime REAL NOT NULL, sha256 TEXT NOT NULL, added REAL NOT NULL,
    generation INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS images_sha256 ON images (sha256);
CREATE INDEX IF NOT EXISTS images_added ON images (added);
CREATE TABLE IF NOT EXISTS segments (
    file TEXT PRIMARY KEY, first_row INTEGER NOT NULL, num_rows INTEGER NOT NULL, generation INTEGER NOT NULL);
"""


@dataclass
class ImageRecord:
    """One image of the gallery."""

    row: int
    path: str
    rel: str  # path relative to the folder it was added from (its first part is the identity folder, if any)
    camera: str
    size: int
    mtime: float
    sha256: str
    added: float  # seconds since the epoch
    generation: int

    @property
    def identity(self) -> Optional[str]:
        """The ``<identity>/`` folder the image was added from, where it was in one."""
        return self.rel.split("/", 1)[0] if "/" in self.rel else None


COLUMNS = "row, path, rel, camera, size, mtime, sha256, added, generation"


@dataclass
class Segment:
    file: str
    first_row: int
    num_rows: int
    generation: int


class Metadata:
    """The SQLite database of a gallery; writes happen in :meth:`transaction`."""

    def __init__(self, path: str, readonly: bool = False) -> None:
        uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
        self.conn = sqlite3.connect(uri, uri=True, isolation_level=None)  # transactions are explicit
        self.conn.execute("PRAGMA synchronous=FULL")
        if not readonly:
            self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All changes inside commit together or not at all (also when the process is killed)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ meta
    def get(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # ------------------------------------------------------------------ images
    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def by_path(self, paths: Sequence[str]) -> Dict[str, ImageRecord]:
        """The records of those of ``paths`` that are in the gallery."""
        out: Dict[str, ImageRecord] = {}
        for chunk in _chunks(list(paths), 900):  # SQLite's default limit of bound parameters
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(f"SELECT {COLUMNS} FROM images WHERE path IN ({marks})", chunk):
                out[r[1]] = ImageRecord(*r)
        return out

    def by_rows(self, rows: Iterable[int]) -> Dict[int, ImageRecord]:
        rows = [int(r) for r in rows]
        out: Dict[int, ImageRecord] = {}
        for chunk in _chunks(rows, 900):
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(f"SELECT {COLUMNS} FROM images WHERE row IN ({marks})", chunk):
                out[r[0]] = ImageRecord(*r)
        return out

    def row_with_hash(self, sha256: str) -> Optional[int]:
        """A live row holding content ``sha256`` (its vector can be copied instead of embedding again)."""
        r = self.conn.execute("SELECT row FROM images WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone()
        return None if r is None else int(r[0])

    def records(self, since: Optional[float] = None) -> List[ImageRecord]:
        """All live images (or those added at or after ``since``), in row order."""
        query = f"SELECT {COLUMNS} FROM images" + (" WHERE added >= ?" if since is not None else "") + " ORDER BY row"
        return [ImageRecord(*r) for r in self.conn.execute(query, () if since is None else (since,))]

    def live_rows(self) -> List[int]:
        return [int(r[0]) for r in self.conn.execute("SELECT row FROM images ORDER BY row")]

    def all_paths(self) -> List[Tuple[int, str]]:
        return [(int(r), p) for r, p in self.conn.execute("SELECT row, path FROM images ORDER BY row")]

    def insert(self, records: Sequence[ImageRecord]) -> None:
        self.conn.executemany(f"INSERT INTO images ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              [(r.row, r.path, r.rel, r.camera, r.size, r.mtime, r.sha256, r.added, r.generation)
                               for r in records])

    def delete_paths(self, paths: Sequence[str]) -> None:
        self.conn.executemany("DELETE FROM images WHERE path = ?", [(p,) for p in paths])

    def touch(self, path: str, size: int, mtime: float) -> None:
        """A file whose content is unchanged but whose size or time changed (e.g. copied back)."""
        self.conn.execute("UPDATE images SET size = ?, mtime = ? WHERE path = ?", (size, mtime, path))

    # ------------------------------------------------------------------ segments
    def segments(self) -> List[Segment]:
        return [Segment(*r) for r in self.conn.execute(
            "SELECT file, first_row, num_rows, generation FROM segments ORDER BY first_row")]

    def replace_segments(self, segments: Sequence[Segment]) -> None:
        self.conn.execute("DELETE FROM segments")
        self.add_segment(*segments)

    def add_segment(self, *segments: Segment) -> None:
        self.conn.executemany("INSERT INTO segments (file, first_row, num_rows, generation) VALUES (?, ?, ?, ?)",
                              [(s.file, s.first_row, s.num_rows, s.generation) for s in segments])


def _chunks(items: List[Any], size: int) -> Iterator[List[Any]]:
    for a in range(0, len(items), size):
        yield items[a:a + size]
