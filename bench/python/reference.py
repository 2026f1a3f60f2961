#!/usr/bin/env python3
"""Plain single-process Python reference for the Squeeze throughput benchmark.

Reads a JSONL file of crawl events (image inline as base64 in `image_b64`), and per event:
parse -> base64 decode -> PIL decode (alpha on white, RGB, EXIF orientation) -> size/aspect check
-> exact dedup (sha256 of the decoded pixels) -> near dedup (dHash, Hamming <= 10 against the last
10000 kept hashes) -> resize + normalise -> batched vision + text ONNX (the same bundle as Squeeze)
-> clip_score (cosine) -> Parquet rows (zstd, a new file every 5000 rows).

The resize reproduces Squeeze's (sharp / libvips 8.17, kernel "cubic") bit for bit on 8-bit RGB
downscales: the built-in model is so sensitive that PIL's own bicubic, which differs by about one
level on a fraction of the pixels, moves clip_score by up to 0.02.

Prints one JSON line with counts, timings, CPU seconds and peak RSS. See README.md.
Usage: python reference.py --input events.jsonl --out DIR [--models models/builtin] [--batch 128] [--threads 2]
"""
import argparse
import base64
import functools
import hashlib
import io
import json
import os
import re
import resource
import sys
import time

T_START = time.perf_counter()

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

MIN_SIDE = 32
MAX_ASPECT = 8
NEAR_BITS = 10
NEAR_WINDOW = 10000
ROWS_PER_FILE = 5000
STORED_JPEG_QUALITY = 90  # Squeeze's decodeImage default (imageFormat "keep")

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("caption", pa.string()),
    ("image", pa.binary()),
    ("clip_score", pa.float32()),
    ("image_embedding", pa.list_(pa.float32())),
])

DATA_URI = re.compile(r"^\s*data:[^,]*;base64,", re.IGNORECASE)


def decode_b64(s):
    """base64 (standard or URL-safe, a data: URI prefix and whitespace allowed) -> bytes."""
    s = DATA_URI.sub("", s, count=1)
    s = "".join(s.split()).replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    return base64.b64decode(s, validate=True)


# EXIF orientation -> the PIL transpose that undoes it (as ImageOps.exif_transpose)
ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def flatten_rgb(im):
    """Alpha composited on white, 3-channel RGB (orientation not applied)."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def orient(im, orientation):
    return im.transpose(ORIENT[orientation]) if orientation in ORIENT else im


# --- libvips-compatible cubic downscale (vips_resize -> reducev then reduceh, each with gap 2.0)


def catmull_rom(x):
    """Mitchell-Netravali cubic with B = 0, C = 0.5, written as libvips evaluates it (the same
    polynomial in another form can differ in the last bit, which the truncation below can see)."""
    B, C = 0.0, 0.5
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = ((12 - 9 * B - 6 * C) * ax3 + (-18 + 12 * B + 6 * C) * ax2 + (6 - 2 * B)) / 6
    far = ((-B - 6 * C) * ax3 + (6 * B + 30 * C) * ax2 + (-12 * B - 48 * C) * ax + (8 * B + 24 * C)) / 6
    return np.where(ax <= 1, near, np.where(ax <= 2, far, 0.0))


@functools.lru_cache(maxsize=4096)
def reduce_matrix(n_in, n_out, shrink, extra, strip):
    """[n_out, n_in] fixed-point (x4096) weights of one libvips reduce pass: 2*rint(2*shrink)+1 taps,
    sub-pixel phase quantised to 1/64, each weight truncated, edges clamped (extend copy). The sample
    positions are stepped by repeated addition (as libvips does), restarting every `strip` outputs."""
    n_point = int(2 * np.rint(2 * shrink) + 1)
    half = n_point // 2
    offset = (1 + extra) / 2.0 - 1
    step = strip or n_out
    X = np.empty(n_out)
    for first in range(0, n_out, step):
        seq = np.full(min(step, n_out - first), shrink)
        seq[0] = (first + 0.5) * shrink - 0.5 - offset
        X[first:first + len(seq)] = np.cumsum(seq)  # sequential sums, like X += shrink
    ix = X.astype(np.int64)
    phase = (((X * 128).astype(np.int64) & 127) + 1) >> 1  # VIPS_TRANSFORM_SCALE 64, rounded
    x = phase / 64.0
    c = catmull_rom((np.arange(n_point)[None, :] - half - x[:, None] + 0.5) / shrink)
    total = np.cumsum(c, axis=1)[:, -1:]  # summed in order
    w = np.trunc(c / total * 4096)
    cols = np.clip(ix[:, None] - half + np.arange(n_point)[None, :], 0, n_in - 1)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.repeat(np.arange(n_out), n_point), cols.ravel()), w.ravel())
    return m


def reduce_axis(a, n_out, axis, strip=0):
    """a: uint8 [H, W, C]; reduce `axis` (0 vertical, 1 horizontal) to n_out pixels."""
    n_in = a.shape[axis]
    if n_in == n_out:
        return a
    shrink = 1.0 / (1.0 / (n_in / n_out))
    extra = n_out * shrink - n_in
    b = np.moveaxis(a, axis, 0)
    k = max(1, int(n_in / n_out / 2.0))  # the gap: integer box shrink first, >= 2x left for the kernel
    if k > 1:
        blocks = -(-n_in // k)
        pad = blocks * k - n_in
        if pad:
            b = np.concatenate([b, np.repeat(b[-1:], pad, axis=0)], axis=0)
        sums = b.reshape(blocks, k, *b.shape[1:]).sum(axis=1, dtype=np.uint32)
        b = (((sums + k // 2) * (2**32 // (256 * k))) >> 24).astype(np.uint8)
        shrink /= k
        extra /= k
    m = reduce_matrix(b.shape[0], n_out, shrink, extra, strip)
    flat = b.reshape(b.shape[0], -1).astype(np.float64)
    r = np.floor((m @ flat + 2048) / 4096)
    r = np.clip(r, 0, 255).astype(np.uint8).reshape(n_out, *b.shape[1:])
    return np.moveaxis(r, 0, axis)


def resize_like_squeeze(im, w, h):
    """RGB PIL image -> uint8 [h, w, 3]. Downscales match sharp's kernel "cubic" exactly; any
    upscale falls back to PIL's bicubic (close, not exact)."""
    if w > im.width or h > im.height:
        return np.asarray(im.resize((w, h), Image.BICUBIC))
    a = np.asarray(im)
    # libvips places the vertical sample positions anew for each strip of output lines it computes;
    # from an encoded (sequential) source reducev sits behind a line cache of 10-line tiles, so 10
    return reduce_axis(reduce_axis(a, h, 0, 10), w, 1)


def dhash(im):
    """64-bit dHash: 9x8 grey thumbnail (box average), one bit per horizontal neighbour comparison."""
    g = np.asarray(im.convert("L").resize((9, 8), Image.BOX), dtype=np.int16)
    bits = (g[:, :-1] > g[:, 1:]).flatten()
    h = 0
    for b in bits:
        h = (h << 1) | int(b)
    return np.uint64(h)


def popcount64(x):
    """Per-element popcount of a uint64 array."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


def words(text):
    """Lower-case, split on anything that is not a Unicode letter (same as Squeeze's word tokenizer)."""
    return "".join(c if c.isalpha() else " " for c in text.lower()).split()


class Models:
    def __init__(self, models_dir, threads):
        with open(os.path.join(models_dir, "bundle.json")) as f:
            bundle = json.load(f)
        v, t = bundle["vision"], bundle["text"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.vision = ort.InferenceSession(os.path.join(models_dir, v["onnx"]), opts, providers=["CPUExecutionProvider"])
        self.text = ort.InferenceSession(os.path.join(models_dir, t["onnx"]), opts, providers=["CPUExecutionProvider"])
        p = v["preprocess"]
        if p["resize"] != "squash":
            raise SystemExit(f"reference only implements resize 'squash', bundle has {p['resize']!r}")
        self.h, self.w = p["size"]
        self.scale = 1.0 if p.get("scale", 1) == 255 else 1.0 / 255.0
        self.mean = np.array(p["mean"], dtype=np.float32)
        self.std = np.array(p["std"], dtype=np.float32)
        self.bgr = p.get("channels", "RGB") == "BGR"
        self.patches = v["grid"]["rows"] * v["grid"]["cols"]
        self.v_in, self.v_out = v["inputs"], v["outputs"]
        self.t_in, self.t_out = t["inputs"], t["outputs"]
        tok = t["tokenizer"]
        if tok["kind"] != "words":
            raise SystemExit(f"reference only implements the 'words' tokenizer, bundle has {tok['kind']!r}")
        with open(os.path.join(models_dir, tok["vocab"])) as f:
            self.vocab = json.load(f)
        self.context = tok["context"]
        types = {i.name: i.type for i in self.text.get_inputs()}
        self.ids_dtype = np.int32 if types[self.t_in["ids"]] == "tensor(int32)" else np.int64
        mask_name = self.t_in.get("mask")
        self.mask_dtype = np.int32 if mask_name and types[mask_name] == "tensor(int32)" else np.int64

    def pixels_pil(self, raw, fmt, w, h, orientation, im):
        """CHW float32 model input the way a Python pipeline would write it: PIL's own bicubic resize
        of the decoded, oriented image, then (v * scale - mean) / std."""
        a = np.asarray(orient(im, orientation).resize((self.w, self.h), Image.BICUBIC), dtype=np.float32) * self.scale
        if self.bgr:
            a = a[:, :, ::-1]
        a = (a - self.mean) / self.std
        return a.transpose(2, 0, 1)

    def pixels(self, raw, fmt, w, h, orientation, im):
        """CHW float32 model input, as Squeeze's sharp pipeline makes it: (JPEG shrink-on-load) ->
        cubic squash resize of the stored orientation -> orientation -> (v * scale - mean) / std.
        w, h: stored (unrotated) size; im: the decoded, flattened, unrotated RGB image.
        Formats other than JPEG and WebP are first re-encoded as Squeeze stores them.

        sharp decodes a JPEG with libjpeg's DCT scaling when it is downscaled 4x or more
        (fastShrinkOnLoad: false still shrinks by 2, 4 or 8, leaving at least 2x for the kernel),
        keeping floor(side / n) pixels; PIL's draft() is the same libjpeg scaling."""
        if fmt not in ("JPEG", "WEBP"):
            # Squeeze stores other formats as JPEG quality 90 (oriented, on white) and embeds that
            # stored image; PIL's encoder at q90 (4:2:0) decodes to the same pixels as sharp's
            im = orient(im, orientation)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=STORED_JPEG_QUALITY)
            raw, fmt, (w, h), orientation = buf.getvalue(), "JPEG", im.size, 1
            im = Image.open(io.BytesIO(raw)).convert("RGB")
        tw, th = (self.h, self.w) if orientation in (5, 6, 7, 8) else (self.w, self.h)
        if fmt == "JPEG":
            s = min(w / tw, h / th)
            n = 8 if s >= 16 else 4 if s >= 8 else 2 if s >= 4 else 1
            if n > 1 and int(s) == n:  # as sharp does, against a libjpeg rounding error
                n //= 2
            if n > 1:
                small = Image.open(io.BytesIO(raw))
                small.draft(None, (w // n, h // n))
                if small.size != (w // n, h // n):
                    small = small.crop((0, 0, w // n, h // n))
                im = flatten_rgb(small)
        a = resize_like_squeeze(im, tw, th)
        if orientation in ORIENT:
            a = np.asarray(Image.fromarray(a).transpose(ORIENT[orientation]))
        a = a.astype(np.float32) * self.scale
        if self.bgr:
            a = a[:, :, ::-1]
        a = (a - self.mean) / self.std
        return a.transpose(2, 0, 1)

    def tokens(self, captions):
        n = len(captions)
        ids = np.zeros((n, self.context), dtype=self.ids_dtype)
        mask = np.zeros((n, self.context), dtype=self.mask_dtype)
        for i, c in enumerate(captions):
            for j, w in enumerate(words(c)[: self.context]):
                ids[i, j] = self.vocab.get(w, 1)
                mask[i, j] = 1
        return ids, mask

    def encode(self, pix, captions):
        """pix: float32 [N, 3, H, W]."""
        feeds = {self.v_in["pixels"]: pix}
        if self.v_in.get("mask"):
            feeds[self.v_in["mask"]] = np.ones((len(pix), self.patches), dtype=np.float32)
        img = self.vision.run([self.v_out["embeds"]], feeds)[0]
        ids, mask = self.tokens(captions)
        tfeeds = {self.t_in["ids"]: ids}
        if self.t_in.get("mask"):
            tfeeds[self.t_in["mask"]] = mask
        txt = self.text.run([self.t_out["embeds"]], tfeeds)[0]
        img = img / np.maximum(np.linalg.norm(img, axis=1, keepdims=True), 1e-12)
        txt = txt / np.maximum(np.linalg.norm(txt, axis=1, keepdims=True), 1e-12)
        return img.astype(np.float32), (img * txt).sum(axis=1).astype(np.float32)


class Writer:
    """Parquet files of at most ROWS_PER_FILE rows, zstd, one row group per write."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.files = 0
        self.writer = None
        self.in_file = 0
        self.rows = 0

    def write(self, ids, captions, images, scores, embeds):
        start = 0
        n = len(ids)
        while start < n:
            if self.writer is None:
                path = os.path.join(self.out_dir, f"part-{self.files:05d}.parquet")
                self.writer = pq.ParquetWriter(path, SCHEMA, compression="zstd")
                self.files += 1
                self.in_file = 0
            take = min(n - start, ROWS_PER_FILE - self.in_file)
            end = start + take
            table = pa.table({
                "id": pa.array(ids[start:end], pa.string()),
                "caption": pa.array(captions[start:end], pa.string()),
                "image": pa.array(images[start:end], pa.binary()),
                "clip_score": pa.array(scores[start:end], pa.float32()),
                "image_embedding": pa.array([e for e in embeds[start:end]], pa.list_(pa.float32())),
            }, schema=SCHEMA)
            self.writer.write_table(table)
            self.in_file += take
            self.rows += take
            start = end
            if self.in_file >= ROWS_PER_FILE:
                self.close()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="models/builtin")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--near-bits", type=int, default=NEAR_BITS,
                    help="near-dup Hamming radius on dHash (default 10; -1 turns near dedup off)")
    ap.add_argument("--resize", choices=["pil", "exact"], default="pil",
                    help="pil (default): PIL's bicubic, as a Python pipeline would; exact: sharp's pixels "
                         "reproduced in numpy (slower; for comparing clip_score with Squeeze)")
    ap.add_argument("--embed-all", action="store_true",
                    help="run the models on every decoded image, duplicates too, as Squeeze's chain does "
                         "(its one model pass comes before dedup); rows are still written for non-duplicates only")
    args = ap.parse_args()

    models = Models(args.models, args.threads)
    load_cpu = resource.getrusage(resource.RUSAGE_SELF)
    load_seconds = time.perf_counter() - T_START
    pixels = models.pixels if args.resize == "exact" else models.pixels_pil
    t0 = time.perf_counter()

    # model includes preprocess (resize + normalise), which is also reported on its own
    stages = {"decode": 0.0, "hash": 0.0, "model": 0.0, "write": 0.0, "preprocess": 0.0}
    events = dead = filtered = 0
    seen = set()
    near = np.zeros(NEAR_WINDOW, dtype=np.uint64)
    near_count = 0
    writer = Writer(args.out)
    batch = []  # (id, caption, original bytes, (format, w, h, orientation, unrotated RGB image))

    def flush():
        t = time.perf_counter()
        pix = np.stack([pixels(b[2], *b[3]) for b in batch]).astype(np.float32)
        stages["preprocess"] += time.perf_counter() - t
        embeds, scores = models.encode(pix, [b[1] for b in batch])
        t2 = time.perf_counter()
        stages["model"] += t2 - t
        keep = [i for i, b in enumerate(batch) if not b[4]]
        writer.write([batch[i][0] for i in keep], [batch[i][1] for i in keep], [batch[i][2] for i in keep], scores[keep], embeds[keep])
        stages["write"] += time.perf_counter() - t2
        batch.clear()

    with open(args.input, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            events += 1
            t = time.perf_counter()
            try:
                ev = json.loads(line)
                ev_id = ev["id"]
                if isinstance(ev_id, int):
                    ev_id = str(ev_id)
                if not isinstance(ev_id, str) or not ev_id:
                    raise ValueError("bad id")
                caption = ev.get("caption") or ""
                if not isinstance(caption, str):
                    raise ValueError("caption is not a string")
                raw = decode_b64(ev["image_b64"])
                if not raw:
                    raise ValueError("empty image")
                im = Image.open(io.BytesIO(raw))
                fmt = im.format
                w, h = im.size
                orientation = im.getexif().get(0x0112, 1)
                if min(w, h) < MIN_SIDE or max(w, h) / min(w, h) > MAX_ASPECT:
                    raise ValueError("bad size")
                base = flatten_rgb(im)
                im = orient(base, orientation)
            except Exception:  # bad JSON, missing fields, bad base64, undecodable or bad-sized image
                stages["decode"] += time.perf_counter() - t
                dead += 1
                continue
            t2 = time.perf_counter()
            stages["decode"] += t2 - t

            digest = hashlib.sha256(f"{im.width}x{im.height}:".encode() + im.tobytes()).digest()
            dup = digest in seen
            if not dup:
                seen.add(digest)
                dh = dhash(im)
                n = min(near_count, NEAR_WINDOW)
                dup = bool(n) and int(popcount64(near[:n] ^ dh).min()) <= args.near_bits
                if not dup:
                    near[near_count % NEAR_WINDOW] = dh
                    near_count += 1
            stages["hash"] += time.perf_counter() - t2
            if dup:
                filtered += 1
                if not args.embed_all:
                    continue

            batch.append((ev_id, caption, raw, (fmt, w, h, orientation, base), dup))
            if len(batch) >= args.batch:
                flush()
    if batch:
        flush()
    t = time.perf_counter()
    writer.close()
    stages["write"] += time.perf_counter() - t
    seconds = time.perf_counter() - t0

    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "events": events,
        "rows": writer.rows,
        "dead": dead,
        "filtered": filtered,
        "seconds": round(seconds, 4),
        "load_seconds": round(load_seconds, 4),
        "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 4),
        "load_cpu_seconds": round(load_cpu.ru_utime + load_cpu.ru_stime, 4),
        "resize": args.resize,
        "embed_all": args.embed_all,
        "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),
        "stages": {k: round(v, 4) for k, v in stages.items()},
        "files": writer.files,
        "batch": args.batch,
        "threads": args.threads,
    }))


if __name__ == "__main__":
    sys.exit(main())
