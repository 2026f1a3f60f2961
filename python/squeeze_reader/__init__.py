"""Read the Parquet shards a Squeeze curator committed, in the committed shard sequence.

Layout of an output directory (src/streams/shards/shard-log.ts)::

    <out>/topic=<t>/partition=<p>/<start>-<end>.<attempt>.parquet   curated rows
    <out>/_commits/topic=<t>/partition=<p>/<start>.json             commit record, names the shard

Only commit records make shards visible: a shard no record names (another attempt's at the same
range, for one), and any file whose name starts with ``.tmp-``, is never read. Shard names are taken
from the records, never parsed.

``out`` is a directory or a URL pyarrow opens (``s3://bucket/prefix``: credentials and the endpoint from
the usual AWS environment, e.g. ``AWS_ENDPOINT_URL_S3``), or any path with ``filesystem=`` a pyarrow or
fsspec filesystem. Shard paths are then URLs (``s3://...``).

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

import pyarrow.fs as pafs
import pyarrow.parquet as pq

try:  # torch is optional: without it SqueezeShards is a plain iterable with the same API
    import torch.utils.data as _torch_data

    _Base: Any = _torch_data.IterableDataset
except Exception:  # ImportError, or a broken torch install
    _torch_data = None

    class _Base:  # type: ignore[no-redef]
        pass


__all__ = ["committed_shards", "committed_files", "SqueezeShards", "cursor_key", "decode_image", "as_hf_dataset"]
__version__ = "0.1.0"

TEMP_PREFIX = ".tmp-"
Cursor = Dict[str, int]


def cursor_key(topic: str, partition: int) -> str:
    """The cursor's key of a partition: ``"<topic>/<partition>"``."""
    return f"{topic}/{int(partition)}"


class _Store:
    """Where an output lives: a local directory, or a path on a pyarrow filesystem (S3, or fsspec's)."""

    def __init__(self, out: Any, filesystem: Any = None) -> None:
        out = os.fspath(out)
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if filesystem is None and out.startswith("s3://") and "?" not in out and endpoint:
            # an S3-compatible store named by the AWS environment (MinIO, moto, ...), as the curator finds it
            scheme, host = endpoint.split("://", 1) if "://" in endpoint else ("https", endpoint)
            filesystem = pafs.S3FileSystem(endpoint_override=host.rstrip("/"), scheme=scheme, region=os.environ.get("AWS_REGION", "us-east-1"))
            path = out[len("s3://"):]
            self.scheme = "s3"
        elif filesystem is None and "://" in out and not out.startswith("file://"):
            filesystem, path = pafs.FileSystem.from_uri(out)
            self.scheme = out.split("://", 1)[0]
        elif filesystem is not None:
            path = out.split("://", 1)[1] if "://" in out else out
            self.scheme = out.split("://", 1)[0] if "://" in out else None
            if not isinstance(filesystem, pafs.FileSystem):  # an fsspec filesystem
                filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
        else:
            path = os.path.abspath(out[len("file://"):] if out.startswith("file://") else out)
            self.scheme = None
        self.fs = filesystem
        self.root = path.rstrip("/") if filesystem is not None else path

    @property
    def local(self) -> bool:
        return self.fs is None

    def join(self, *parts: str) -> str:
        if self.local:
            return os.path.join(self.root, *parts)
        return "/".join([self.root, *parts])

    def uri(self, path: str) -> str:
        """How a shard path is shown: absolute for a directory, ``scheme://path`` on a remote store."""
        return path if self.local or not self.scheme else f"{self.scheme}://{path}"

    def listdir(self, path: str) -> List[str]:
        if self.local:
            try:
                return sorted(os.listdir(path))
            except (FileNotFoundError, NotADirectoryError):
                return []
        infos = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return sorted(i.base_name for i in infos)

    def read_json(self, path: str) -> Any:
        if self.local:
            with open(path, "r", encoding="utf-8") as f:
                return json.load(f)
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read().decode("utf-8"))

    def parquet(self, path: str) -> "pq.ParquetFile":
        if self.local:
            return pq.ParquetFile(path)
        return pq.ParquetFile(self.fs.open_input_file(path))


def _order_key(rec: Mapping[str, Any]) -> Tuple[Any, ...]:
    return (rec["created_at"], rec["topic"], rec["partition"], rec["start_offset"])


def _normalise(store: _Store, raw: Any) -> Dict[str, Any]:
    """Checks the fields the sequence depends on and makes the shard path absolute (a URL on a remote store)."""
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
        rec["shard"] = store.join(*shard.split("/"))
    else:
        rec["shard"] = None
    return rec


class _Scanner:
    """Lists commit records; they are created exclusively and never change, so each is parsed once."""

    def __init__(self, store: _Store) -> None:
        self.store = store
        self._cache: Dict[str, Dict[str, Any]] = {}
        self._warned: Set[str] = set()

    def records(self) -> List[Dict[str, Any]]:
        """Every commit record under <out>/_commits (null shards included), in the sequence's order."""
        st = self.store
        root = st.join("_commits")
        found: List[Dict[str, Any]] = []
        for t in st.listdir(root):
            if t.startswith(TEMP_PREFIX):
                continue
            for p in st.listdir(st.join("_commits", t)):
                if p.startswith(TEMP_PREFIX):
                    continue
                for name in st.listdir(st.join("_commits", t, p)):
                    if name.startswith(TEMP_PREFIX) or not name.endswith(".json"):
                        continue
                    path = st.join("_commits", t, p, name)
                    rec = self._cache.get(path)
                    if rec is None:
                        try:
                            rec = _normalise(st, st.read_json(path))
                        except (OSError, ValueError) as e:
                            if path not in self._warned:
                                self._warned.add(path)
                                warnings.warn(f"squeeze_reader: skipping unreadable commit record {path}: {e}", stacklevel=3)
                            continue
                        self._cache[path] = rec
                    found.append(rec)
        found.sort(key=_order_key)
        return found


def committed_shards(out: str, cursor: Optional[Mapping[str, int]] = None, filesystem: Any = None) -> List[Dict[str, Any]]:
    """The commit records of one poll: those at or after ``cursor`` that name a shard, in the committed
    order ``(created_at, topic, partition, start_offset)``, each with ``shard`` as an absolute path (a URL
    such as ``s3://bucket/prefix/...`` on a remote store)."""
    cur = _check_cursor(cursor or {})
    store = _Store(out, filesystem)
    found = []
    for rec in _Scanner(store).records():
        if rec["shard"] is not None and rec["start_offset"] >= cur.get(cursor_key(rec["topic"], rec["partition"]), 0):
            r = dict(rec)
            r["shard"] = store.uri(r["shard"])
            found.append(r)
    return found


def committed_files(out: str, filesystem: Any = None) -> List[str]:
    """The committed shards' paths (URLs on a remote store), in the committed order: the file list to give
    Hugging Face ``datasets``, DuckDB or pandas so they read committed rows only."""
    return [r["shard"] for r in committed_shards(out, filesystem=filesystem)]


def decode_image(item: Dict[str, Any]) -> Dict[str, Any]:
    """A ``transform`` for SqueezeShards: the item with ``image`` decoded to an RGB PIL image (needs pillow)."""
    import io

    from PIL import Image

    out = dict(item)
    if out.get("image") is not None:
        out["image"] = Image.open(io.BytesIO(out["image"])).convert("RGB")
    return out


def as_hf_dataset(out: str, filesystem: Any = None, columns: Optional[Sequence[str]] = None) -> Any:
    """The committed rows as a Hugging Face ``datasets.Dataset`` whose ``image`` column is an ``Image``
    feature (decoded to PIL on access). Rows appear once each: ``copies`` is a column, not repeats. The map
    columns (``scores``, ``attrs``), which ``datasets`` has no type for, become JSON strings. The rows are
    read into memory (Arrow); for outputs larger than memory, stream with SqueezeShards instead.
    Needs the ``datasets`` package."""
    import datasets
    import pyarrow as pa

    store = _Store(out, filesystem)
    tables = []
    for rec in _Scanner(store).records():
        if rec["shard"] is None:
            continue
        pf = store.parquet(rec["shard"])
        try:
            t = pf.read(columns=list(columns) if columns is not None else None)
        finally:
            close = getattr(pf, "close", None)
            if close is not None:
                close()
        for name in list(t.schema.names):
            if pa.types.is_map(t.schema.field(name).type):
                as_json = [None if v is None else json.dumps(dict(v), sort_keys=True) for v in t.column(name).to_pylist()]
                t = t.set_column(t.schema.get_field_index(name), name, pa.array(as_json, pa.string()))
        tables.append(t)
    if not tables:
        raise ValueError(f"{out}: no committed shards")
    ds = datasets.Dataset(pa.concat_tables(tables, promote_options="default"))
    return ds.cast_column("image", datasets.Image()) if "image" in ds.column_names else ds


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

    ``transform``, when given, is applied to every item before it is yielded: ``decode_image`` gives PIL
    images; a function that applies open_clip's ``preprocess`` and ``tokenizer`` gives tensors (README).

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
        transform: Optional[Any] = None,
        filesystem: Any = None,
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
        self._store = _Store(out, filesystem)
        self.out = self._store.uri(self._store.root) if not self._store.local else self._store.root
        self.transform = transform
        self.rank = rank
        self.world_size = world_size
        self.follow = follow
        self.poll_seconds = poll_seconds
        self.columns = columns
        self.honour_copies = honour_copies
        self._start: Cursor = _check_cursor(cursor or {})
        self._cursor: Cursor = dict(self._start)
        self._scanner = _Scanner(self._store)

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
        pf = self._store.parquet(path)
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
                f"squeeze_reader: skipping shard {self._store.uri(path)} ({key} offsets {rec['start_offset']}-{rec['end_offset']}): "
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
            yield self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return (
            f"SqueezeShards({self.out!r}, rank={self.rank}, world_size={self.world_size}, follow={self.follow}, "
            f"cursor={self._start!r})"
        )
