"""Read the Parquet shards a Squeeze curator committed, in the committed shard sequence.

Layout of an output directory (src/streams/shards/shard-log.ts)::

    <out>/topic=<t>/partition=<p>/<start>-<end>.<attempt>.parquet   curated rows
    <out>/_commits/topic=<t>/partition=<p>/<start>.json             commit record, names the shard

Only commit records make shards visible: a shard no record names (another attempt's at the same
range, for one), and any file whose name starts with ``.tmp-``, is never read. Shard names are taken
from the records, never parsed.

The committed shard sequence (shared with the TypeScript trainer, ``squeeze train``): a cursor maps
``"<topic>/<partition>"`` to the next start offset (missing: 0). One poll lists every commit record
with ``start_offset >= cursor[topic/partition]``, skips records whose ``shard`` is null (advancing the
cursor past them) and orders the rest by ``(created_at, topic, partition, start_offset)``. Shards are
yielded in that order; the cursor moves to ``end_offset + 1`` once a shard has been fully yielded.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import pyarrow.parquet as pq

try:  # torch is optional: without it SqueezeShards is a plain iterable with the same API
    import torch.utils.data as _torch_data

    _Base: Any = _torch_data.IterableDataset
except Exception:  # ImportError, or a broken torch install
    _torch_data = None

    class _Base:  # type: ignore[no-redef]
        pass


__all__ = ["committed_shards", "SqueezeShards", "cursor_key"]
__version__ = "0.1.0"

TEMP_PREFIX = ".tmp-"
Cursor = Dict[str, int]


def cursor_key(topic: str, partition: int) -> str:
    """The cursor's key of a partition: ``"<topic>/<partition>"``."""
    return f"{topic}/{int(partition)}"


def _listdir(path: str) -> List[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _order_key(rec: Mapping[str, Any]) -> Tuple[Any, ...]:
    return (rec["created_at"], rec["topic"], rec["partition"], rec["start_offset"])


def _normalise(out: str, raw: Any) -> Dict[str, Any]:
    """Checks the fields the sequence depends on and makes the shard path absolute."""
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    rec = dict(raw)
    if not isinstance(rec.get("topic"), str):
        raise ValueError("topic is not a string")
    for f in ("partition", "start_offset", "end_offset"):
        v = rec.get(f)
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{f} is not an integer")
    created = rec.get("created_at", 0)
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        raise ValueError("created_at is not a number")
    rec["created_at"] = created
    shard = rec.get("shard")
    if shard is not None:
        if not isinstance(shard, str) or not shard:
            raise ValueError("shard is neither a path nor null")
        rec["shard"] = os.path.abspath(os.path.join(out, *shard.split("/")))
    else:
        rec["shard"] = None
    return rec


class _Scanner:
    """Lists commit records; they are created exclusively and never change, so each is parsed once."""

    def __init__(self, out: str) -> None:
        self.out = os.path.abspath(os.fspath(out))
        self._cache: Dict[str, Dict[str, Any]] = {}
        self._warned: Set[str] = set()

    def records(self) -> List[Dict[str, Any]]:
        """Every commit record under <out>/_commits (null shards included), in the sequence's order."""
        root = os.path.join(self.out, "_commits")
        found: List[Dict[str, Any]] = []
        for t in _listdir(root):
            if t.startswith(TEMP_PREFIX):
                continue
            for p in _listdir(os.path.join(root, t)):
                if p.startswith(TEMP_PREFIX):
                    continue
                pdir = os.path.join(root, t, p)
                for name in _listdir(pdir):
                    if name.startswith(TEMP_PREFIX) or not name.endswith(".json"):
                        continue
                    path = os.path.join(pdir, name)
                    rec = self._cache.get(path)
                    if rec is None:
                        try:
                            with open(path, "r", encoding="utf-8") as f:
                                rec = _normalise(self.out, json.load(f))
                        except (OSError, ValueError) as e:
                            if path not in self._warned:
                                self._warned.add(path)
                                warnings.warn(f"squeeze_reader: skipping unreadable commit record {path}: {e}", stacklevel=3)
                            continue
                        self._cache[path] = rec
                    found.append(rec)
        found.sort(key=_order_key)
        return found


def committed_shards(out: str, cursor: Optional[Mapping[str, int]] = None) -> List[Dict[str, Any]]:
    """The commit records of one poll: those at or after ``cursor`` that name a shard, in the committed
    order ``(created_at, topic, partition, start_offset)``, each with ``shard`` as an absolute path."""
    cur = _check_cursor(cursor or {})
    return [
        dict(rec)
        for rec in _Scanner(out).records()
        if rec["shard"] is not None and rec["start_offset"] >= cur.get(cursor_key(rec["topic"], rec["partition"]), 0)
    ]


def _check_cursor(cursor: Any) -> Cursor:
    if not isinstance(cursor, Mapping):
        raise TypeError(f"a cursor is a mapping of '<topic>/<partition>' to an offset, not {type(cursor).__name__}")
    out: Cursor = {}
    for k, v in cursor.items():
        if not isinstance(k, str) or not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"bad cursor entry {k!r}: {v!r}")
        out[k] = v
    return out


def _worker() -> Tuple[int, int]:
    if _torch_data is not None:
        info = _torch_data.get_worker_info()
        if info is not None:
            return info.id, info.num_workers
    return 0, 1


class SqueezeShards(_Base):  # type: ignore[misc, valid-type]
    """The rows of the committed shards, in the committed shard sequence.

    Each item is a dict of ``columns`` (all columns when None) plus ``copy``, the 0-based copy number.
    Shard number ``i`` of the sequence (counted over every record that names a shard, from the first
    commit record of the directory, so a reader keeps its shards when it resumes) goes to the reader
    ``rank * num_workers + worker_id == i % (world_size * num_workers)``, ``num_workers`` and ``worker_id``
    from ``torch.utils.data.get_worker_info()`` (1 and 0 outside a DataLoader worker).

    With ``honour_copies`` a row is yielded ``copies`` times (0: never), spread over a shard: first every
    row's copy 0, then copy 1 of the rows with ``copies >= 2``, and so on. Without it every row once.

    Each ``iter()`` starts at the cursor given to the constructor or to ``load_state_dict``;
    ``state_dict()`` holds the cursor past the shards this reader fully yielded in its latest iteration.
    A shard that is missing or unreadable is skipped with a warning and the cursor moves past it.
    """

    def __init__(
        self,
        out: str,
        *,
        rank: int = 0,
        world_size: int = 1,
        follow: bool = False,
        poll_seconds: float = 2.0,
        cursor: Optional[Mapping[str, int]] = None,
        columns: Optional[Sequence[str]] = None,
        honour_copies: bool = True,
    ) -> None:
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        if poll_seconds < 0:
            raise ValueError("poll_seconds must be >= 0")
        if columns is not None:
            if isinstance(columns, str):
                columns = [columns]
            columns = list(columns)
            if "copy" in columns:
                raise ValueError("'copy' is added by the reader; it is not a column")
        self.out = os.path.abspath(os.fspath(out))
        self.rank = rank
        self.world_size = world_size
        self.follow = follow
        self.poll_seconds = poll_seconds
        self.columns = columns
        self.honour_copies = honour_copies
        self._start: Cursor = _check_cursor(cursor or {})
        self._cursor: Cursor = dict(self._start)
        self._scanner = _Scanner(self.out)

    # -- state ---------------------------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Cursor]:
        return {"cursor": dict(self._cursor)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or "cursor" not in state:
            raise ValueError("a state dict is {'cursor': {...}}")
        self._start = _check_cursor(state["cursor"])
        self._cursor = dict(self._start)

    def _advance(self, key: str, rec: Mapping[str, Any]) -> None:
        self._cursor[key] = max(self._cursor.get(key, 0), rec["end_offset"] + 1)

    # -- iteration -----------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        worker_id, num_workers = _worker()
        readers = self.world_size * num_workers
        me = self.rank * num_workers + worker_id
        self._cursor = dict(self._start)
        passed = dict(self._start)  # past every record this iteration has seen, whoever's shard it was
        while True:
            fresh = 0
            i = -1
            for rec in self._scanner.records():
                if rec["shard"] is not None:
                    i += 1
                key = cursor_key(rec["topic"], rec["partition"])
                if rec["start_offset"] < passed.get(key, 0):
                    continue
                fresh += 1
                passed[key] = max(passed.get(key, 0), rec["end_offset"] + 1)
                if rec["shard"] is None:
                    self._advance(key, rec)
                elif i % readers == me:
                    yield from self._shard_items(key, rec)
            if not self.follow:
                return
            if fresh == 0:
                time.sleep(self.poll_seconds)

    def _read(self, path: str) -> Tuple[List[Dict[str, Any]], List[int]]:
        pf = pq.ParquetFile(path)
        try:
            names = pf.schema_arrow.names
            want = list(names) if self.columns is None else list(self.columns)
            missing = [c for c in want if c not in names]
            if missing:
                raise ValueError(f"no column {', '.join(missing)}")
            has_copies = "copies" in names
            read = want + (["copies"] if self.honour_copies and has_copies and "copies" not in want else [])
            table = pf.read(columns=read)
        finally:
            close = getattr(pf, "close", None)
            if close is not None:
                close()
        if self.honour_copies and has_copies:
            copies = [1 if c is None else max(0, int(c)) for c in table.column("copies").to_pylist()]
        else:
            copies = [1] * table.num_rows
        rows = table.select(want).to_pylist()
        return rows, copies

    def _shard_items(self, key: str, rec: Mapping[str, Any]) -> Iterator[Dict[str, Any]]:
        path = rec["shard"]
        try:
            rows, copies = self._read(path)
        except Exception as e:  # missing, cut short, not Parquet, wrong columns: skip, never crash
            warnings.warn(
                f"squeeze_reader: skipping shard {path} ({key} offsets {rec['start_offset']}-{rec['end_offset']}): "
                f"{type(e).__name__}: {e}",
                stacklevel=2,
            )
            self._advance(key, rec)
            return
        order = [(r, c) for c in range(max(copies, default=0)) for r, k in enumerate(copies) if k > c]
        if not order:
            self._advance(key, rec)
            return
        last = len(order) - 1
        for j, (r, c) in enumerate(order):
            item = dict(rows[r])
            item["copy"] = c
            if j == last:  # the consumer holds every item of the shard once it has this one
                self._advance(key, rec)
            yield item

    def __repr__(self) -> str:
        return (
            f"SqueezeShards({self.out!r}, rank={self.rank}, world_size={self.world_size}, follow={self.follow}, "
            f"cursor={self._start!r})"
        )
