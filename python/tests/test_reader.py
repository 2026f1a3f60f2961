"""Tests of squeeze_reader on an output directory built here with pyarrow (unittest + pyarrow; torch if present)."""
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import unittest
import warnings
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import squeeze_reader  # noqa: E402
from squeeze_reader import SqueezeShards, committed_shards  # noqa: E402

try:
    import torch  # noqa: F401
    from torch.utils.data import DataLoader

    HAVE_TORCH = True
except Exception:
    HAVE_TORCH = False

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source_topic", pa.string()),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("image", pa.binary()),
        ("caption", pa.string()),
        ("grid_rows", pa.int32()),
        ("grid_cols", pa.int32()),
        ("kept_patches", pa.list_(pa.int32())),
        ("score", pa.float32()),
        ("copies", pa.int32()),
    ]
)


def pad(n):
    return str(n).zfill(20)


def topic_dir(topic, partition):
    return os.path.join(f"topic={topic}", f"partition={partition}")


class Out:
    """An output directory as a curator leaves it, built with pyarrow."""

    def __init__(self, root):
        self.root = root
        self.rows = {}  # shard rel path -> list of (id, copies)

    def write_rows(self, path, topic, partition, start, end, copies):
        offsets = list(range(start, end + 1))[: len(copies)]
        cols = {
            "id": [f"{topic}-{partition}-{o}" for o in offsets],
            "source_topic": [topic] * len(offsets),
            "source_partition": [partition] * len(offsets),
            "source_offset": offsets,
            "image": [bytes([o % 256]) * 16 for o in offsets],
            "caption": [f"caption {o}" for o in offsets],
            "grid_rows": [4] * len(offsets),
            "grid_cols": [4] * len(offsets),
            "kept_patches": [[0, 5, 10] if o % 2 else None for o in offsets],
            "score": [0.5] * len(offsets),
            "copies": copies,
        }
        ids = cols["id"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(pa.table(cols, schema=SCHEMA), path)
        return list(zip(ids, copies))

    def commit(self, topic, partition, start, end, created_at, copies=None, shard="auto", write=True):
        rel = None
        if shard == "auto" and copies is not None:
            rel = f"{topic_dir(topic, partition)}/{pad(start)}-{pad(end)}.parquet"
        elif shard not in ("auto", None):
            rel = shard
        if rel is not None and write and copies is not None:
            self.rows[rel] = self.write_rows(os.path.join(self.root, rel), topic, partition, start, end, copies)
        rec = {
            "version": 1,
            "topic": topic,
            "partition": partition,
            "start_offset": start,
            "end_offset": end,
            "records": end - start + 1,
            "rows": len(copies or []),
            "dead": 0,
            "filtered": 0,
            "shard": rel,
            "shard_bytes": 0,
            "dead_letters": None,
            "state": None,
            "close_reason": "rows",
            "config_hash": "cfg",
            "model_version": "m1",
            "schema_version": 3,
            "created_at": created_at,
        }
        cdir = os.path.join(self.root, "_commits", topic_dir(topic, partition))
        os.makedirs(cdir, exist_ok=True)
        tmp = os.path.join(cdir, f".tmp-{pad(start)}-{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.replace(tmp, os.path.join(cdir, f"{pad(start)}.json"))  # a reader never sees half a record
        return rel


def build(root):
    """Returns (out, expected order of readable shards, rel path of the corrupt and of the missing shard)."""
    o = Out(root)
    # created_at decides the order; ties go to topic, then partition, then start offset
    a0 = o.commit("crawl", 0, 0, 9, 1000, copies=[1, 2, 0, 3, 1])
    b0 = o.commit("crawl", 1, 0, 4, 1000, copies=[1, 1, 1])
    c0 = o.commit("alpha", 0, 0, 2, 2000, copies=[2, 2])
    o.commit("crawl", 0, 10, 14, 1500, copies=None, shard=None)  # a range with no kept rows
    a1 = o.commit("crawl", 0, 15, 19, 2000, copies=[1, 1, 1, 1])
    corrupt = o.commit("crawl", 1, 5, 9, 2500, copies=[1, 1])
    with open(os.path.join(root, corrupt), "wb") as f:  # cut short: the footer is gone
        f.write(b"PAR1" + b"\x00" * 40)
    missing = f"{topic_dir('crawl', 1)}/{pad(10)}-{pad(12)}.parquet"
    o.commit("crawl", 1, 10, 12, 2600, copies=[1], shard=missing, write=False)
    b1 = o.commit("crawl", 1, 13, 20, 3000, copies=[3, 0, 1])
    # what a crash leaves: a temporary shard, an orphan shard and a temporary commit record naming it
    pdir = os.path.join(root, topic_dir("crawl", 0))
    o.write_rows(os.path.join(pdir, f".tmp-{pad(20)}-{pad(24)}-1-x.parquet"), "tmp", 0, 20, 24, [1, 1])
    orphan = f"{topic_dir('crawl', 0)}/{pad(20)}-{pad(24)}.parquet"
    o.write_rows(os.path.join(root, orphan), "orphan", 0, 20, 24, [1, 1])
    cdir = os.path.join(root, "_commits", topic_dir("crawl", 0))
    with open(os.path.join(cdir, f".tmp-{pad(20)}-{pad(24)}-1-x"), "w") as f:
        json.dump({"topic": "crawl", "partition": 0, "start_offset": 20, "end_offset": 24, "shard": orphan, "created_at": 1}, f)
    # the sequence (null and unreadable shards included where they fall), and the readable part of it
    sequence = [a0, b0, c0, a1, corrupt, missing, b1]  # c0 before a1: same created_at, "alpha" < "crawl"
    return o, sequence, corrupt, missing


def read_all(ds):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = list(ds)
    return items, caught


def shard_of(item):
    return (item["source_topic"], item["source_partition"], item["source_offset"])


class ReaderTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="squeeze-reader-")
        self.out, self.sequence, self.corrupt, self.missing = build(self.root)
        self.readable = [s for s in self.sequence if s not in (self.corrupt, self.missing)]

    def tearDown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def expected_items(self, shards):
        """(id, copy) in the order the contract gives: shard by shard, copy round by copy round."""
        exp = []
        for s in shards:
            rows = self.out.rows[s]
            for c in range(max(k for _, k in rows)):
                exp.extend((i, c) for i, k in rows if k > c)
        return exp

    def test_committed_shards_order_and_paths(self):
        recs = committed_shards(self.root)
        self.assertEqual([os.path.relpath(r["shard"], self.root).replace(os.sep, "/") for r in recs], self.sequence)
        self.assertTrue(all(os.path.isabs(r["shard"]) for r in recs))
        keys = [(r["created_at"], r["topic"], r["partition"], r["start_offset"]) for r in recs]
        self.assertEqual(keys, sorted(keys))
        # a cursor leaves out what is before it, per partition
        later = committed_shards(self.root, {"crawl/0": 15, "crawl/1": 13})
        self.assertEqual([os.path.relpath(r["shard"], self.root).replace(os.sep, "/") for r in later], [self.sequence[i] for i in (2, 3, 6)])

    def test_reads_every_row_in_order_with_copies_spread(self):
        items, _ = read_all(SqueezeShards(self.root))
        self.assertEqual([(x["id"], x["copy"]) for x in items], self.expected_items(self.readable))
        # counts: each row exactly `copies` times, copies 0 never
        counts = Counter(x["id"] for x in items)
        for s in self.readable:
            for i, k in self.out.rows[s]:
                self.assertEqual(counts.get(i, 0), k, i)
        # spreading inside a shard: copy numbers never go down
        first = [x["copy"] for x in items if x["source_topic"] == "crawl" and x["source_partition"] == 0 and x["source_offset"] < 10]
        self.assertEqual(first, [0, 0, 0, 0, 1, 1, 2])
        # item fields: the columns plus copy
        self.assertEqual(set(items[0]), set(SCHEMA.names) | {"copy"})
        self.assertIsInstance(items[0]["image"], bytes)
        self.assertEqual(items[1]["kept_patches"], [0, 5, 10])

    def test_temporaries_and_orphans_are_never_read(self):
        items, _ = read_all(SqueezeShards(self.root))
        self.assertFalse([x for x in items if x["source_topic"] in ("tmp", "orphan")])
        self.assertFalse([x for x in items if x["source_offset"] >= 20 and x["source_partition"] == 0])

    def test_corrupt_and_missing_shards_are_skipped_with_a_warning(self):
        ds = SqueezeShards(self.root, columns=["id"])
        items, caught = read_all(ds)
        messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        self.assertEqual(len(messages), 2, messages)
        self.assertIn(os.path.join(self.root, *self.corrupt.split("/")), messages[0])
        self.assertIn(os.path.join(self.root, *self.missing.split("/")), messages[1])
        self.assertIn("crawl/1", messages[0])
        # the reader went on past both, and its cursor is past them
        self.assertEqual(len(items), len(self.expected_items(self.readable)))
        self.assertEqual(ds.state_dict(), {"cursor": {"crawl/0": 20, "crawl/1": 21, "alpha/0": 3}})

    def test_unreadable_commit_record_is_skipped_with_a_warning(self):
        cdir = os.path.join(self.root, "_commits", topic_dir("crawl", 7))
        os.makedirs(cdir)
        bad = os.path.join(cdir, f"{pad(0)}.json")
        with open(bad, "w") as f:
            f.write('{"topic": "crawl", "partit')
        items, caught = read_all(SqueezeShards(self.root, columns=["id"]))
        self.assertTrue(any(bad in str(w.message) for w in caught), [str(w.message) for w in caught])
        self.assertEqual(len(items), len(self.expected_items(self.readable)))

    def test_columns_and_honour_copies_off(self):
        items, _ = read_all(SqueezeShards(self.root, columns=["id", "caption"], honour_copies=False))
        self.assertEqual(set(items[0]), {"id", "caption", "copy"})
        ids = [x["id"] for x in items]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(len(ids), sum(len(self.out.rows[s]) for s in self.readable))
        self.assertTrue(all(x["copy"] == 0 for x in items))

    def test_null_shard_moves_the_cursor(self):
        ds = SqueezeShards(self.root, cursor={"crawl/0": 10, "crawl/1": 1000, "alpha/0": 1000})
        items, _ = read_all(ds)
        self.assertEqual({x["source_offset"] for x in items}, {15, 16, 17, 18})
        self.assertEqual(ds.state_dict()["cursor"]["crawl/0"], 20)

    def test_resume_from_any_point_yields_exactly_the_rest(self):
        full, _ = read_all(SqueezeShards(self.root))
        ends, n = set(), 0  # the item counts at which a shard has been fully yielded
        for s in self.readable:
            n += len(self.expected_items([s]))
            ends.add(n)
        for k in range(len(full) + 1):
            ds = SqueezeShards(self.root)
            it = iter(ds)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                head = [next(it) for _ in range(k)]
            state = ds.state_dict()
            done = max([e for e in ends if e <= k], default=0)
            again = SqueezeShards(self.root)
            again.load_state_dict(json.loads(json.dumps(state)))  # a cursor survives JSON
            rest, _ = read_all(again)
            self.assertEqual(head[:done] + rest, full, f"resumed after {k} items")
            self.assertEqual(again.state_dict()["cursor"], {"crawl/0": 20, "crawl/1": 21, "alpha/0": 3})
        # a second iteration of one reader starts at its start cursor again
        ds = SqueezeShards(self.root)
        self.assertEqual(read_all(ds)[0], read_all(ds)[0])

    def test_rank_split_is_disjoint_and_complete(self):
        full, _ = read_all(SqueezeShards(self.root))
        for world in (1, 2, 3, 7):
            parts = []
            for rank in range(world):
                items, _ = read_all(SqueezeShards(self.root, rank=rank, world_size=world))
                parts.append(items)
                # rank r gets shards r, r+world, ... of the sequence, in order
                mine = [s for i, s in enumerate(self.sequence) if i % world == rank and s in self.readable]
                self.assertEqual([(x["id"], x["copy"]) for x in items], self.expected_items(mine))
            pairs = [(x["id"], x["copy"]) for p in parts for x in p]
            self.assertEqual(len(pairs), len(set(pairs)), f"world {world}: disjoint")
            self.assertEqual(set(pairs), {(x["id"], x["copy"]) for x in full}, f"world {world}: complete")

    def test_rank_split_survives_resume(self):
        full, _ = read_all(SqueezeShards(self.root))
        got = []
        for rank in range(2):
            ds = SqueezeShards(self.root, rank=rank, world_size=2)
            it = iter(ds)
            head = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for x in it:
                    head.append(x)
                    if ds.state_dict()["cursor"]:
                        break  # this reader's first shard is done
                self.assertIsNotNone(next(it, None))  # and one item of its next shard, not done
            again = SqueezeShards(self.root, rank=rank, world_size=2, cursor=ds.state_dict()["cursor"])
            rest, _ = read_all(again)
            got += head + rest
        pairs = Counter((x["id"], x["copy"]) for x in got)
        self.assertEqual(set(pairs), {(x["id"], x["copy"]) for x in full})
        self.assertTrue(all(v == 1 for v in pairs.values()), "no item twice across the resume")

    def test_follow_picks_up_new_commits(self):
        ds = SqueezeShards(self.root, follow=True, poll_seconds=0.05, columns=["id"])
        it = iter(ds)
        n = len(self.expected_items(self.readable))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            head = [next(it) for _ in range(n)]
        self.assertEqual(len(head), n)

        def later():
            time.sleep(0.3)
            self.out.commit("crawl", 0, 20, 21, 5000, copies=[2])

        threading.Thread(target=later, daemon=True).start()
        t0 = time.time()
        new = [next(it), next(it)]
        self.assertGreaterEqual(time.time() - t0, 0.25)
        self.assertEqual([(x["id"], x["copy"]) for x in new], [("crawl-0-20", 0), ("crawl-0-20", 1)])
        self.assertEqual(ds.state_dict()["cursor"]["crawl/0"], 22)

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            SqueezeShards(self.root, rank=2, world_size=2)
        with self.assertRaises(ValueError):
            SqueezeShards(self.root).load_state_dict({"crawl/0": 3})
        with self.assertRaises(ValueError):
            SqueezeShards(self.root, cursor={"crawl/0": -1})

    def test_empty_or_absent_directory(self):
        self.assertEqual(committed_shards(os.path.join(self.root, "nothing")), [])
        self.assertEqual(list(SqueezeShards(os.path.join(self.root, "nothing"))), [])

    @unittest.skipUnless(HAVE_TORCH, "torch is not installed")
    def test_dataloader_workers_cover_every_row_once_per_copy(self):
        self.assertTrue(issubclass(SqueezeShards, torch.utils.data.IterableDataset))
        full, _ = read_all(SqueezeShards(self.root, columns=["id"]))
        for world in (1, 2):
            pairs = []
            for rank in range(world):
                ds = SqueezeShards(self.root, rank=rank, world_size=world, columns=["id"])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pairs.extend((x["id"], int(x["copy"])) for x in DataLoader(ds, batch_size=None, num_workers=2))
            self.assertEqual(Counter(pairs), Counter((x["id"], x["copy"]) for x in full))


class WithoutTorchTest(unittest.TestCase):
    def test_plain_iterable_api(self):
        if squeeze_reader._torch_data is None:
            self.assertEqual(SqueezeShards.__mro__[1].__module__, "squeeze_reader")
        ds = SqueezeShards(tempfile.gettempdir() + "/squeeze-reader-absent")
        self.assertEqual(ds.state_dict(), {"cursor": {}})


class FilesystemAndHooksTest(unittest.TestCase):
    """The same output read through a pyarrow filesystem (the code path of s3:// and fsspec URLs), the
    committed file list, and the transform hook."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="squeeze-reader-fs-")
        self.out, self.sequence, self.corrupt, self.missing = build(self.root)

    def tearDown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def test_a_filesystem_reads_what_the_directory_reads(self):
        import pyarrow.fs as pafs

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            local, _ = read_all(SqueezeShards(self.root))
            remote, _ = read_all(SqueezeShards(self.root, filesystem=pafs.LocalFileSystem()))
            sub = pafs.SubTreeFileSystem(self.root, pafs.LocalFileSystem())
            nested, _ = read_all(SqueezeShards("", filesystem=sub))
        key = lambda xs: [(x["id"], x["copy"], x["source_offset"]) for x in xs]  # noqa: E731
        self.assertEqual(key(remote), key(local))
        self.assertEqual(key(nested), key(local))
        self.assertGreater(len(local), 0)

    def test_committed_files_are_the_committed_shards(self):
        files = squeeze_reader.committed_files(self.root)
        self.assertEqual([os.path.relpath(f, self.root).replace(os.sep, "/") for f in files], self.sequence)

    def test_transform_is_applied_to_every_item(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain, _ = read_all(SqueezeShards(self.root, columns=["id", "caption"]))
            shouted, _ = read_all(SqueezeShards(self.root, columns=["id", "caption"], transform=lambda x: {**x, "caption": x["caption"].upper()}))
        self.assertEqual([x["caption"].upper() for x in plain], [x["caption"] for x in shouted])


if __name__ == "__main__":
    unittest.main()
