/**
 * Shards on an S3-compatible object store. There is no rename and no link, so exactly-once rests on one
 * primitive: a PutObject with `If-None-Match: *` that the store refuses (412) when the key exists.
 *
 *  1. The shard, dead letters and state go to attempt-unique keys, `<start>-<end>.<attempt>.parquet` and so
 *     on (shard-log.ts's rangeFile, as in a directory): two curators racing for a range never overwrite
 *     each other's objects.
 *  2. The commit record `_commits/.../<start>.json` is created with that conditional put. The winner's record
 *     names its own objects; the loser deletes its objects and is fenced.
 *  3. Objects no commit record names are garbage: a reader that goes through commit records never sees
 *     them; recovery and the next commit of the range delete them, as on a directory (shard-log.ts).
 *
 * A put whose reply was lost is retried by the SDK and may then meet its own record: a 412 is answered by
 * reading the record, and it is ours when it names our attempt's objects.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { gunzipSync } from 'node:zlib';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { ObjectStoreError, type S3Location, s3Client } from './object-store';
import { readParquetRows, writeRowsParquet } from './parquet-rows';
import { type CommitRecord, FencedError, newAttempt, pad, rangeFile, type Recovered, startOf, topicDir } from './shard-log';
import type { RangeFiles, ShardStore } from './store';

/** Requests by kind, for the sizing guide and the bench (docs/SIZING.md). */
export type RequestCounts = Record<'put' | 'conditional_put' | 'get' | 'head' | 'list' | 'delete', number>;

const statusOf = (e: unknown): number | undefined => (e as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
const nameOf = (e: unknown): string => (e as { name?: string })?.name ?? '';
const notFound = (e: unknown): boolean => statusOf(e) === 404 || ['NoSuchKey', 'NotFound'].includes(nameOf(e));
const preconditionFailed = (e: unknown): boolean => statusOf(e) === 412 || nameOf(e) === 'PreconditionFailed';

export function partitionKeys(topic: string, partition: number) {
  const rel = posix.join(topicDir(topic), `partition=${partition}`);
  return { shards: rel, dlq: posix.join('_dlq', rel), state: posix.join('_state', rel), commits: posix.join('_commits', rel) };
}

export class S3ShardStore implements ShardStore {
  readonly root: string;
  readonly requests: RequestCounts = { put: 0, conditional_put: 0, get: 0, head: 0, list: 0, delete: 0 };
  /** commit records are immutable once created: each is read once */
  private readonly known = new Map<string, CommitRecord[]>();

  constructor(
    readonly loc: S3Location,
    readonly client: S3Client = s3Client(),
  ) {
    this.root = `s3://${loc.bucket}${loc.prefix ? `/${loc.prefix}` : ''}`;
  }

  key(rel: string): string {
    return this.loc.prefix ? `${this.loc.prefix}/${rel}` : rel;
  }

  uri(rel: string): string {
    return `s3://${this.loc.bucket}/${this.key(rel)}`;
  }

  private fail(what: string, rel: string, e: unknown): never {
    if (e instanceof FencedError || e instanceof ObjectStoreError) throw e;
    const s = statusOf(e);
    throw new ObjectStoreError(`${this.uri(rel)}: ${what} failed${s ? ` (HTTP ${s})` : ''}: ${((e as Error)?.message ?? String(e)).split('\n')[0]}`);
  }

  /** one counted request; `handled` turns an expected error (404, 412) into a value, any other is one line */
  private async request<T>(kind: keyof RequestCounts, what: string, rel: string, run: () => Promise<T>, handled?: (e: unknown) => { value: T } | null): Promise<T> {
    this.requests[kind]++;
    try {
      return await run();
    } catch (e) {
      const h = handled?.(e);
      if (h) return h.value;
      return this.fail(what, rel, e);
    }
  }

  get(rel: string): Promise<Buffer | null> {
    return this.request('get', 'GetObject', rel, async () => {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.loc.bucket, Key: this.key(rel) }));
      return Buffer.from(await r.Body!.transformToByteArray());
    }, (e) => (notFound(e) ? { value: null } : null));
  }

  exists(rel: string): Promise<boolean> {
    return this.request('head', 'HeadObject', rel, async () => {
      await this.client.send(new HeadObjectCommand({ Bucket: this.loc.bucket, Key: this.key(rel) }));
      return true;
    }, (e) => (notFound(e) ? { value: false } : null));
  }

  async put(rel: string, body: Buffer | string): Promise<void> {
    await this.request('put', 'PutObject', rel, () => this.client.send(new PutObjectCommand({ Bucket: this.loc.bucket, Key: this.key(rel), Body: body })));
  }

  /** creates `rel` only if it does not exist; false when it does */
  create(rel: string, body: Buffer | string): Promise<boolean> {
    return this.request('conditional_put', 'conditional PutObject', rel, async () => {
      await this.client.send(new PutObjectCommand({ Bucket: this.loc.bucket, Key: this.key(rel), Body: body, IfNoneMatch: '*' }));
      return true;
    }, (e) => (preconditionFailed(e) ? { value: false } : null));
  }

  async remove(rel: string): Promise<void> {
    await this.request('delete', 'DeleteObject', rel, async () => {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.loc.bucket, Key: this.key(rel) }));
    }, (e) => (notFound(e) ? { value: undefined } : null));
  }

  /** names directly under `dir`, in key order, after `after` (a name) when given; `until` stops early */
  async list(dir: string, after?: string, until?: (name: string) => boolean): Promise<string[]> {
    const names: string[] = [];
    await this.pages(dir, { after }, (page, prefix) => {
      for (const o of page.Contents ?? []) {
        const name = o.Key!.slice(prefix.length);
        if (name.includes('/')) continue;
        if (until?.(name)) return false;
        names.push(name);
      }
      return true;
    });
    return names;
  }

  /** the sub-directories (common prefixes) directly under `dir`, by name, in key order */
  async listDirs(dir: string): Promise<string[]> {
    const names: string[] = [];
    await this.pages(dir, { delimiter: '/' }, (page, prefix) => {
      for (const p of page.CommonPrefixes ?? []) names.push(p.Prefix!.slice(prefix.length).replace(/\/$/, ''));
      return true;
    });
    return names;
  }

  /** ListObjectsV2 pages under `dir/` until `each` returns false or the listing ends */
  private async pages(dir: string, o: { after?: string; delimiter?: string }, each: (page: ListObjectsV2CommandOutput, prefix: string) => boolean): Promise<void> {
    const prefix = `${this.key(dir)}/`;
    let token: string | undefined;
    do {
      const page = await this.request('list', 'ListObjectsV2', dir, () =>
        this.client.send(new ListObjectsV2Command({
          Bucket: this.loc.bucket, Prefix: prefix, Delimiter: o.delimiter, ContinuationToken: token,
          ...(token || o.after === undefined ? {} : { StartAfter: prefix + o.after }),
        })),
      );
      if (!each(page, prefix)) return;
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /** true when no commit record exists under the prefix */
  async isEmpty(): Promise<boolean> {
    const r = await this.request('list', 'ListObjectsV2', '_commits', () =>
      this.client.send(new ListObjectsV2Command({ Bucket: this.loc.bucket, Prefix: `${this.key('_commits')}/`, MaxKeys: 1 })),
    );
    return (r.KeyCount ?? r.Contents?.length ?? 0) === 0;
  }

  async partitions(): Promise<{ topic: string; partition: number }[]> {
    const found: { topic: string; partition: number }[] = [];
    for (const t of await this.listDirs('_commits')) {
      for (const p of await this.listDirs(posix.join('_commits', t))) {
        const [first] = await this.readCommitDir(posix.join('_commits', t, p));
        if (first) found.push({ topic: first.topic, partition: first.partition });
      }
    }
    return found;
  }

  async readRows(rel: string): Promise<Record<string, unknown>[]> {
    const body = await this.get(rel);
    if (!body) throw new ObjectStoreError(`${this.uri(rel)}: a committed shard is missing`);
    const tmp = join(tmpdir(), `squeeze-shard-${process.pid}-${randomBytes(6).toString('hex')}.parquet`);
    try {
      await fs.writeFile(tmp, body);
      return await readParquetRows(tmp);
    } finally {
      await fs.rm(tmp, { force: true });
    }
  }

  async readCommits(topic: string, partition: number): Promise<CommitRecord[]> {
    return this.readCommitDir(partitionKeys(topic, partition).commits);
  }

  /** the commit records in one partition's `_commits/...` directory, in offset order */
  async readCommitDir(dir: string): Promise<CommitRecord[]> {
    const cacheKey = dir;
    const known = this.known.get(cacheKey) ?? [];
    const last = known.length ? `${pad(known[known.length - 1].start_offset)}.json` : undefined;
    const fresh = (await this.list(dir, last)).filter((n) => /^\d{20}\.json$/.test(n));
    const records = await Promise.all(
      fresh.map(async (n) => {
        const body = await this.get(posix.join(dir, n));
        if (!body) throw new ObjectStoreError(`${this.uri(posix.join(dir, n))}: a listed commit record vanished`);
        return JSON.parse(body.toString('utf8')) as CommitRecord;
      }),
    );
    const all = [...known, ...records];
    this.known.set(cacheKey, all);
    return all;
  }

  async recover(topic: string, partition: number): Promise<Recovered> {
    const keys = partitionKeys(topic, partition);
    const commits = await this.readCommits(topic, partition);
    const named = new Set<string>();
    for (const c of commits) for (const f of [c.shard, c.dead_letters, c.state]) if (f) named.add(f);
    const latest = commits[commits.length - 1];
    const next = latest ? latest.end_offset + 1 : 0;
    const removed: string[] = [];
    for (const dir of [keys.shards, keys.dlq, keys.state]) {
      // only before the next offset: an object at or after it may be a zombie's commit in flight (shard-log.ts)
      for (const name of await this.list(dir, undefined, (n) => startOf(n) >= next)) {
        const rel = posix.join(dir, name);
        if (named.has(rel)) continue;
        await this.remove(rel);
        removed.push(this.uri(rel));
      }
    }
    const state = latest?.state ? await this.readState(latest.state) : undefined;
    return { nextOffset: latest ? next : null, state, commits, removed };
  }

  async readState(rel: string): Promise<Record<string, unknown>> {
    const body = await this.get(rel);
    if (!body) throw new ObjectStoreError(`${this.uri(rel)}: the state a commit record names is missing`);
    return JSON.parse(gunzipSync(body).toString('utf8')) as Record<string, unknown>;
  }

  async commit(f: RangeFiles): Promise<CommitRecord> {
    const { topic, partition, start, end } = f;
    const keys = partitionKeys(topic, partition);
    const commitRel = posix.join(keys.commits, `${pad(start)}.json`);
    if (await this.exists(commitRel)) throw new FencedError(topic, partition, start);
    const attempt = newAttempt();
    // a failed put leaves objects no record names: garbage that the next recovery or commit of the range removes
    const placed: string[] = [];
    const place = async (rel: string, body: Buffer | string): Promise<string> => {
      placed.push(rel);
      await this.put(rel, body);
      return rel;
    };
    let shard: string | null = null;
    let shardBytes = 0;
    if (f.rows.length > 0) {
      // parquetjs writes files: write one locally, upload it, delete it
      const tmp = join(tmpdir(), `squeeze-shard-${process.pid}-${attempt}.parquet`);
      try {
        shardBytes = (await writeRowsParquet(tmp, f.rows, { compression: f.compression })).bytes;
        shard = await place(posix.join(keys.shards, rangeFile(start, end, attempt, 'parquet')), await fs.readFile(tmp));
      } finally {
        await fs.rm(tmp, { force: true });
      }
    }
    const deadLetters = f.deadLines !== null ? await place(posix.join(keys.dlq, rangeFile(start, end, attempt, 'jsonl')), f.deadLines) : null;
    const state = await place(posix.join(keys.state, rangeFile(start, end, attempt, 'json.gz')), f.state);
    const record: CommitRecord = { ...f.record, shard, shard_bytes: shardBytes, dead_letters: deadLetters, state };
    if (!(await this.create(commitRel, JSON.stringify(record, null, 1)))) {
      const body = await this.get(commitRel);
      const winner = body ? (JSON.parse(body.toString('utf8')) as CommitRecord) : null;
      // our own put, retried after a lost reply, finds our record: that is a success
      if (winner && winner.state === state) return this.committed(record);
      for (const rel of placed) if (!winner || ![winner.shard, winner.dead_letters, winner.state].includes(rel)) await this.remove(rel);
      if (winner) await this.clearOrphans(winner);
      throw new FencedError(topic, partition, start);
    }
    return this.committed(record);
  }

  private async committed(record: CommitRecord): Promise<CommitRecord> {
    await this.clearOrphans(record);
    return record;
  }

  /** deletes objects of the record's range that it does not name: what a crashed or fenced attempt left */
  async clearOrphans(rec: CommitRecord): Promise<string[]> {
    const keys = partitionKeys(rec.topic, rec.partition);
    const named = new Set([rec.shard, rec.dead_letters, rec.state].filter((x): x is string => !!x));
    const removed: string[] = [];
    const after = rec.start_offset > 0 ? `${pad(rec.start_offset - 1)}~` : undefined;
    for (const dir of [keys.shards, keys.dlq, keys.state]) {
      for (const name of await this.list(dir, after, (n) => startOf(n) > rec.end_offset)) {
        const rel = posix.join(dir, name);
        if (named.has(rel) || startOf(name) < rec.start_offset) continue;
        await this.remove(rel);
        removed.push(this.uri(rel));
      }
    }
    return removed;
  }
}
