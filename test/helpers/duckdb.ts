/**
 * DuckDB as an independent Parquet reader for tests (the contract: check shards with a real
 * reader, not with the writer's own). One in-memory instance per process; one connection per call.
 */
import { DuckDBInstance } from '@duckdb/node-api';

let instance: Promise<DuckDBInstance> | null = null;

function db(): Promise<DuckDBInstance> {
  instance ??= DuckDBInstance.create(':memory:');
  return instance;
}

/** A SQL string literal: `sqlQuote("it's")` -> `'it''s'`. Use it for paths in read_parquet(...). */
export function sqlQuote(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/**
 * Converts DuckDB's JS values into plain values: BIGINT/HUGEINT -> number when it is a safe
 * integer (else stays bigint), BLOB -> Buffer, lists/structs recursively. TIMESTAMP stays a Date,
 * MAP stays DuckDB's `[{ key, value }, ...]` array (in stored order).
 */
function plain(v: unknown): unknown {
  if (typeof v === 'bigint') {
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  if (v === null || typeof v !== 'object') return v;
  if (v instanceof Date) return v;
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(plain);
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[k] = plain(x);
  return out;
}

/** Runs `sql` on an in-memory DuckDB and returns the rows as plain objects (see `plain`). */
export async function duckQuery(sql: string): Promise<Record<string, unknown>[]> {
  const conn = await (await db()).connect();
  try {
    const reader = await conn.runAndReadAll(sql);
    return reader.getRowObjectsJS().map((row) => plain(row) as Record<string, unknown>);
  } finally {
    conn.closeSync();
  }
}

/** Column name -> DuckDB type string (e.g. `INTEGER[]`, `MAP(VARCHAR, VARCHAR)`) of a Parquet file. */
export async function duckDescribe(parquetPath: string): Promise<Record<string, string>> {
  const rows = await duckQuery(`DESCRIBE SELECT * FROM read_parquet(${sqlQuote(parquetPath)})`);
  const out: Record<string, string> = {};
  for (const r of rows) out[String(r['column_name'])] = String(r['column_type']);
  return out;
}

/**
 * Lets this process's DuckDB read s3:// from the S3-compatible server at `endpoint` (path-style, the
 * test credentials), loading the httpfs extension from the file deploy/services.sh installed
 * (SQUEEZE_DUCKDB_HTTPFS): DuckDB's own extension site is not reachable from CI.
 */
export async function duckOnS3(endpoint: string, httpfsPath: string): Promise<void> {
  const u = new URL(endpoint);
  await duckQuery(`LOAD ${sqlQuote(httpfsPath)}`);
  await duckQuery(
    `CREATE OR REPLACE SECRET squeeze_test_s3 (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', ` +
      `ENDPOINT ${sqlQuote(u.host)}, URL_STYLE 'path', USE_SSL ${u.protocol === 'https:'})`,
  );
}
