"""A gallery folder: vectors, their faiss index and their metadata, changed atomically by one writer.

Layout of a gallery folder ``G``::

    G/gallery.sqlite        metadata (images, model, index settings, generation): the commit point
    G/vectors.f32           float32 vectors, row after row (rows past the committed count are ignored)
    G/index-<gen>.faiss     index segments, each over a range of rows
    G/template-<gen>.faiss  the trained, empty ivf index new segments are made from (ivf only)
    G/writer.lock           held while a command changes the gallery

A change (``build``, ``add``, ``prune``) appends vectors past the committed rows, writes
new index files under new names (temporary file, fsync, rename), and only then commits
one SQLite transaction that names them.  Killed at any moment, the gallery reads as
before the change (the next writer removes the leftovers) or as after it.
"""
from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..engine.run_dir import acquire_lock, release_lock
from ..utils.paths import fsync_dir, write_atomically
from ..utils.errors import UserError
from . import index as gindex
from .metadata import ImageRecord, Metadata, Segment

logger = logging.getLogger(__name__)

DB = "gallery.sqlite"
VECTORS = "vectors.f32"
LOCK = "writer.lock"
MAX_SEGMENTS = 8  # more: the next change rebuilds one index over all rows (each segment costs a search)
# queries searched by one thread: faiss splits a search by query, so a single query gains nothing
# from more threads, and their OpenMP hand-off cost it 4x (48 vs 12 ms, 10,000 x 2048 flat) on a loaded 2-core CPU
SMALL_BATCH = 8
MAX_DEAD_FRACTION = 0.25  # more pruned/replaced rows than this: rebuild (they are still scanned, then dropped)


class GalleryError(UserError):
    pass


@dataclass
class Change:
    """What one commit does: new images (with their vectors), images removed, images whose file was touched."""

    new: Sequence[ImageRecord] = ()  # rows are assigned at commit, in this order
    vectors: Optional[np.ndarray] = None  # (len(new), D)
    removed: Sequence[str] = ()  # paths
    touched: Sequence[Tuple[str, int, float]] = ()  # (path, size, mtime): same content, new file facts


class Gallery:
    """A gallery on disk; :meth:`open` to read (and search), :meth:`create` / ``writable=True`` to change."""

    def __init__(self, folder: str, meta: Metadata, writable: bool) -> None:
        self.folder, self.meta, self.writable = folder, meta, writable
        self._index: Optional["LoadedIndex"] = None

    # ------------------------------------------------------------------ opening
    @staticmethod
    def exists(folder: str) -> bool:
        return os.path.isfile(os.path.join(folder, DB))

    @classmethod
    def open(cls, folder: str, writable: bool = False) -> "Gallery":
        """An existing gallery; a writer holds its lock until :meth:`close` and cleans up an interrupted change."""
        if not cls.exists(folder):
            what = "is not a gallery (no gallery.sqlite in it)" if os.path.isdir(folder) else "does not exist"
            raise GalleryError(f"--gallery {folder} {what}; create one with hhcl-gallery build")
        if writable:
            acquire_lock(folder, LOCK, label="--gallery", holder_kind="writer")
        try:
            gallery = cls(folder, Metadata(os.path.join(folder, DB), readonly=not writable), writable)
            if writable:
                gallery._remove_leftovers()
        except BaseException:
            if writable:
                release_lock(folder, LOCK)
            raise
        return gallery

    @classmethod
    def create(cls, folder: str, identity: Dict[str, Any], dim: int = 0, index: str = "auto") -> "Gallery":
        """A new, empty gallery (refuses a folder that already holds one); ``dim`` 0: set by the first commit."""
        if cls.exists(folder):
            raise GalleryError(f"--gallery {folder} already holds a gallery; add images to it with hhcl-gallery add, "
                               "or give a new folder")
        os.makedirs(folder, exist_ok=True)
        acquire_lock(folder, LOCK, label="--gallery", holder_kind="writer")
        try:
            gallery = cls(folder, Metadata(os.path.join(folder, DB)), True)
            with gallery.meta.transaction():
                gallery.meta.set("generation", 0)
                gallery.meta.set("rows", 0)
                gallery.meta.set("dim", int(dim))
                gallery.meta.set("model", identity)
                gallery.meta.set("index", gindex.IndexSettings(index, gindex.resolve_kind(index, 0, dim)).as_dict())
                gallery.meta.set("created", time.time())
        except BaseException:
            release_lock(folder, LOCK)
            raise
        return gallery

    def discard(self) -> None:
        """Remove a gallery that never committed anything (a ``build`` that failed before its first commit)."""
        if self.generation != 0:
            raise RuntimeError("only a gallery without commits can be discarded")
        self.meta.close()
        for name in (DB, VECTORS, DB + "-journal"):
            if os.path.exists(os.path.join(self.folder, name)):
                os.remove(os.path.join(self.folder, name))
        self.meta = Metadata(":memory:")  # close() still works

    def close(self) -> None:
        self.meta.close()
        if self.writable:
            release_lock(self.folder, LOCK)

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    @property
    def dim(self) -> int:
        return int(self.meta.get("dim"))

    @property
    def identity(self) -> Dict[str, Any]:
        return self.meta.get("model")

    @property
    def generation(self) -> int:
        return int(self.meta.get("generation"))

    @property
    def num_rows(self) -> int:
        """Vector rows committed (live and dead)."""
        return int(self.meta.get("rows"))

    @property
    def settings(self) -> gindex.IndexSettings:
        return gindex.IndexSettings(**self.meta.get("index"))

    def __len__(self) -> int:
        return self.meta.count()

    def vectors(self) -> np.ndarray:
        """The committed vectors as a read-only memory map (rows x D float32)."""
        n, d = self.num_rows, self.dim
        if n == 0:
            return np.zeros((0, d), np.float32)
        return np.memmap(os.path.join(self.folder, VECTORS), np.float32, "r", shape=(n, d))

    def live_mask(self) -> Optional[np.ndarray]:
        """Which rows hold a live image; ``None`` when all do."""
        n = self.num_rows
        if len(self) == n:
            return None
        mask = np.zeros(n, bool)
        mask[self.meta.live_rows()] = True
        return mask

    # ------------------------------------------------------------------ changing
    def commit(self, change: Change, seed: int = 0) -> int:
        """Apply ``change`` atomically; returns the new generation."""
        if not self.writable:
            raise RuntimeError("the gallery was opened read-only")
        gen, first = self.generation + 1, self.num_rows
        new = list(change.new)
        d = self.dim or (0 if change.vectors is None else change.vectors.shape[1])
        vectors = np.zeros((0, d), np.float32) if change.vectors is None else change.vectors
        if len(vectors) != len(new) or (len(new) and vectors.shape[1] != d):
            raise ValueError(f"{len(new)} new images need ({len(new)}, {d}) vectors, got {tuple(vectors.shape)}")
        stop = first + len(new)
        if not self.dim:
            with self.meta.transaction():  # the dimension of a new gallery: from its first vectors
                self.meta.set("dim", int(d))
        self._append_vectors(first, vectors)
        removed_rows = self.meta.by_path(change.removed)
        live_after = len(self) - len(removed_rows) + len(new)
        settings = self.settings
        segments = self.meta.segments()
        dead_after = stop - live_after
        wanted_kind = gindex.resolve_kind(settings.requested, live_after, d)
        rebuild = (not segments or wanted_kind != settings.kind or len(segments) >= MAX_SEGMENTS
                   or (stop and dead_after > MAX_DEAD_FRACTION * stop))
        if rebuild and stop:
            live = np.ones(stop, bool)
            live[[r.row for r in removed_rows.values()]] = False
            if self.num_rows:
                old = self.live_mask()
                if old is not None:
                    live[:first] &= old
            settings, segments, template = self._build_index(gen, wanted_kind, settings.requested, stop,
                                                             None if live.all() else live, seed)
        elif len(new):
            template = self.meta.get("template")
            segments = segments + [self._write_segment(gen, first, stop, settings.kind, template)]
        else:
            template = self.meta.get("template")
        now = time.time()
        for i, record in enumerate(new):
            record.row, record.generation = first + i, gen
            record.added = record.added or now
        with self.meta.transaction():
            self.meta.delete_paths(change.removed)
            self.meta.insert(new)
            for path, size, mtime in change.touched:
                self.meta.touch(path, size, mtime)
            self.meta.replace_segments(segments)
            self.meta.set("rows", stop)
            self.meta.set("index", settings.as_dict())
            self.meta.set("template", template)
            self.meta.set("generation", gen)
        self._remove_leftovers()
        self._index = None
        return gen

    def _append_vectors(self, first: int, vectors: np.ndarray, chunk: int = 65_536) -> None:
        path = os.path.join(self.folder, VECTORS)
        with open(path, "ab+") as f:
            f.truncate(first * self.dim * 4)  # drop what an interrupted change left past the committed rows
            f.seek(first * self.dim * 4)
            for a in range(0, len(vectors), chunk):
                f.write(np.ascontiguousarray(vectors[a:a + chunk], dtype=np.float32).tobytes())
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.folder)

    def _all_vectors(self, stop: int) -> np.ndarray:
        return np.memmap(os.path.join(self.folder, VECTORS), np.float32, "r", shape=(stop, self.dim))

    def _build_index(self, gen: int, kind_name: str, requested: str, stop: int, live: Optional[np.ndarray],
                     seed: int) -> Tuple[gindex.IndexSettings, List[Segment], Optional[str]]:
        """One index over rows [0, stop): trained, filled, its search knob tuned and its recall measured."""
        vectors = self._all_vectors(stop)
        kind = gindex.index_kind(kind_name)
        start = time.perf_counter()
        template = kind.template(vectors, seed, None if live is None else np.flatnonzero(live))
        template_file = None
        if kind_name == "ivf":
            template_file = f"template-{gen}.faiss"
            _write_index(template, os.path.join(self.folder, template_file))
        index = gindex.add_rows(gindex.empty_copy(template) if kind_name == "ivf" else template, vectors, 0, stop)
        knob, recall = gindex.tune_search_knob(kind_name, index, vectors, live, seed,
                                               sel=_dead_selector(live, 0, stop))
        segment = Segment(f"index-{gen}.faiss", 0, stop, gen)
        _write_index(index, os.path.join(self.folder, segment.file))
        logger.info("built a %s index over %d vectors in %.1fs%s", kind_name, stop, time.perf_counter() - start,
                    "" if recall is None else f"; recall@10 against exact search {recall:.3f}")
        return gindex.IndexSettings(requested, kind_name, knob, recall), [segment], template_file

    def _write_segment(self, gen: int, first: int, stop: int, kind_name: str, template: Optional[str]) -> Segment:
        import faiss

        if kind_name == "ivf":
            index = faiss.read_index(os.path.join(self.folder, template))
        else:
            index = gindex.index_kind(kind_name).template(np.zeros((0, self.dim), np.float32))
        gindex.add_rows(index, self._all_vectors(stop), first, stop)
        segment = Segment(f"index-{gen}.faiss", first, stop - first, gen)
        _write_index(index, os.path.join(self.folder, segment.file))
        return segment

    def _remove_leftovers(self) -> None:
        """Files of changes that never committed (or that a commit made obsolete); vectors past the committed rows."""
        keep = {s.file for s in self.meta.segments()} | {self.meta.get("template")}
        for path in glob.glob(os.path.join(self.folder, "*.faiss")) + glob.glob(os.path.join(self.folder, ".tmp-*")):
            if os.path.basename(path) not in keep:
                os.remove(path)
        vectors = os.path.join(self.folder, VECTORS)
        size = self.num_rows * self.dim * 4
        if os.path.exists(vectors) and os.path.getsize(vectors) > size:
            os.truncate(vectors, size)

    # ------------------------------------------------------------------ searching
    def index(self) -> "LoadedIndex":
        """The index segments, loaded once (on the GPU where faiss sees one)."""
        if self._index is None:
            for attempt in range(3):
                try:
                    self._index = LoadedIndex.load(self)
                    break
                except FileNotFoundError:  # a writer committed and removed a segment between our reads
                    if attempt == 2:
                        raise
        return self._index

    def search(self, images_or_features: Any, k: int = 10, query_cameras: Optional[Sequence[str]] = None,
               rerank: bool = False) -> List[Any]:
        """For each query (an (N, D) array of features, or image paths / PIL images), its ``k`` best matches.

        Images are embedded with the gallery's own model.  ``query_cameras``: leave out gallery
        images of each query's camera.  ``rerank``: k-reciprocal re-ranking (``TEST.RERANK_*``).
        Returns one list of :class:`hhcl_plugin.gallery.search.Match` per query.
        """
        from .search import RerankSettings, search

        settings = None
        if rerank:
            test = self._config().TEST
            settings = RerankSettings(test.RERANK_K1, test.RERANK_K2, test.RERANK_LAMBDA)
        return search(self, images_or_features, k, query_cameras, settings)

    def _config(self) -> Any:
        from .model_identity import stored_config

        return stored_config(self.identity)

    def search_vectors(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (similarities, rows) of unit-norm ``queries`` among the live images; rows -1 past the end."""
        return self.index().search(np.ascontiguousarray(queries, dtype=np.float32), k)


class LoadedIndex:
    """The gallery's index segments in memory, searched together with dead rows filtered out."""

    def __init__(self, parts: List[Tuple[Any, Segment, Any]], kind_name: str, knob: int) -> None:
        self.parts, self.kind, self.knob = parts, gindex.index_kind(kind_name), knob

    @classmethod
    def load(cls, gallery: Gallery) -> "LoadedIndex":
        import faiss

        settings = gallery.settings
        live = gallery.live_mask()
        parts = []
        kind = gindex.index_kind(settings.kind)
        for seg in gallery.meta.segments():
            index = faiss.read_index(os.path.join(gallery.folder, seg.file))
            kind.set_knob(index, settings.search_knob)
            sel = _dead_selector(live, seg.first_row, seg.first_row + seg.num_rows)
            # the dead rows' selector is a CPU feature: such a segment stays on the CPU
            parts.append((index if sel is not None else gindex.on_device(index, settings.kind), seg, sel))
        return cls(parts, settings.kind, settings.search_knob)

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        if len(queries) > SMALL_BATCH:
            return self._search(queries, k)
        import faiss

        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self._search(queries, k)
        finally:
            faiss.omp_set_num_threads(threads)

    def _search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        sims = np.full((len(queries), 0), -np.inf, np.float32)
        rows = np.zeros((len(queries), 0), np.int64)
        for index, seg, sel in self.parts:
            params = None if sel is None else self.kind.search_params(self.knob, sel)
            s, i = index.search(queries, k, params=params)
            sims = np.concatenate([sims, s], axis=1)
            rows = np.concatenate([rows, np.where(i >= 0, i + seg.first_row, -1)], axis=1)
        sims = np.where(rows >= 0, sims, -np.inf)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        sims, rows = np.take_along_axis(sims, order, 1), np.take_along_axis(rows, order, 1)
        rows[~np.isfinite(sims)] = -1
        if rows.shape[1] < k:  # fewer vectors than k
            pad = k - rows.shape[1]
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        return sims, rows


def _dead_selector(live: Optional[np.ndarray], first: int, stop: int) -> Any:
    """A faiss selector of the live rows of segment [first, stop) (in its own numbering), or None when all are."""
    if live is None or live[first:stop].all():
        return None
    import faiss

    batch = faiss.IDSelectorBatch(np.flatnonzero(~live[first:stop]).astype(np.int64))
    selector = faiss.IDSelectorNot(batch)
    selector._keep = batch  # IDSelectorNot keeps a pointer to it, not a copy
    return selector


def _write_index(index: Any, path: str) -> None:
    import faiss

    write_atomically(path, lambda f: faiss.write_index(index, faiss.PyCallbackIOWriter(f.write)), "the index segment")
