/**
 * S3-compatible object stores: what exactly-once commits there need, checked up front.
 * A commit record may only be written if no other curator wrote it first, and without rename or link
 * the store itself must refuse the second writer: a PutObject with `If-None-Match: *` must fail with
 * 412 when the key exists. `checkObjectStore` verifies that, the bucket and the credentials, and says
 * in one line what is wrong. The shard store that builds on it is src/streams/shards/s3-shard-store.ts.
 *
 * Credentials and region come from the usual AWS environment variables (AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL for non-AWS stores).
 */
import { randomUUID } from 'node:crypto';
import { DeleteObjectCommand, HeadBucketCommand, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';

export interface S3Location {
  bucket: string;
  /** key prefix without leading or trailing slash ('' for the bucket root) */
  prefix: string;
}

/** `s3://bucket/prefix` to its parts; null when the string is not an s3:// URL. */
export function parseS3Url(url: string): S3Location | null {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url);
  if (!m) return null;
  const bucket = m[1]!;
  // bucket naming rules (S3): 3-63 characters, lower case, digits, dots and hyphens
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw new ObjectStoreError(`s3://${bucket}: not a valid bucket name`);
  return { bucket, prefix: (m[2] ?? '').replace(/^\/+|\/+$/g, '') };
}

export class ObjectStoreError extends Error {}

export interface StoreOptions {
  /** endpoint override for non-AWS stores (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, then AWS) */
  endpoint?: string;
  region?: string;
  /** attempts per request, with the SDK's exponential backoff (503 SlowDown, throttling, timeouts) */
  maxAttempts?: number;
}

export function s3Client(o: StoreOptions = {}): S3Client {
  // the pinned SDK runs on Node 20; its notice about future SDK releases needing Node 22 is not for our users
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const endpoint = o.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
  return new S3Client({
    region: o.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
    ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
    maxAttempts: o.maxAttempts ?? 5,
  });
}

const status = (e: unknown): number | undefined => (e as S3ServiceException)?.$metadata?.httpStatusCode;
const code = (e: unknown): string => (e as { name?: string })?.name ?? '';

/** Checks the bucket exists and the credentials reach it (enough for a store only read from); returns its URL. */
export async function checkBucket(client: S3Client, loc: S3Location): Promise<string> {
  const where = `s3://${loc.bucket}${loc.prefix ? `/${loc.prefix}` : ''}`;
  try {
    await client.send(new HeadBucketCommand({ Bucket: loc.bucket }));
  } catch (e) {
    const s = status(e);
    if (s === 404 || code(e) === 'NotFound' || code(e) === 'NoSuchBucket') throw new ObjectStoreError(`${where}: bucket ${loc.bucket} does not exist`);
    if (s === 403 || s === 401) throw new ObjectStoreError(`${where}: access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)`);
    throw new ObjectStoreError(`${where}: cannot reach the object store: ${(e as Error).message.split('\n')[0]}`);
  }
  return where;
}

/**
 * Checks that `loc` can hold exactly-once commits: the bucket exists, the credentials may write to it,
 * and a second conditional put of the same key is refused. Throws an ObjectStoreError with one line.
 */
export async function checkObjectStore(client: S3Client, loc: S3Location): Promise<void> {
  const where = await checkBucket(client, loc);
  const key = `${loc.prefix ? `${loc.prefix}/` : ''}_probe/${randomUUID()}`;
  const put = () => client.send(new PutObjectCommand({ Bucket: loc.bucket, Key: key, Body: 'squeeze conditional-put probe', IfNoneMatch: '*' }));
  try {
    await put();
  } catch (e) {
    if (status(e) === 403) throw new ObjectStoreError(`${where}: the credentials may not write here`);
    throw new ObjectStoreError(`${where}: a write failed: ${(e as Error).message.split('\n')[0]}`);
  }
  let refused = false;
  try {
    await put();
  } catch (e) {
    if (status(e) === 412 || code(e) === 'PreconditionFailed') refused = true;
    else throw new ObjectStoreError(`${where}: a conditional write failed: ${(e as Error).message.split('\n')[0]}`);
  } finally {
    await client.send(new DeleteObjectCommand({ Bucket: loc.bucket, Key: key })).catch(() => undefined);
  }
  if (!refused) throw new ObjectStoreError(`${where}: the store ignores conditional puts (If-None-Match: *), so two curators could both commit the same range: exactly-once is impossible there`);
}
