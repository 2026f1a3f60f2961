/**
 * Image fetching under the limits of docs/FORMATS.md, Limits: http and https only, no private, loopback or link-local
 * targets unless allow-listed, an overall timeout, a redirect cap and a size cap.
 *
 * The address that was checked is the address that is dialled: DNS is resolved here, every returned address is
 * classified, and the request gets a `lookup` that answers with those addresses only, so a second (rebound) DNS
 * answer cannot redirect the connection. Every redirect hop is checked again.
 *
 * @example
 * const fetchImage = createImageFetcher({ timeoutMs: 10_000, maxBytes: 20 << 20, maxRedirects: 3, allowHosts: [], userAgent: 'squeeze' });
 * const r = await fetchImage('https://example.com/cat.jpg'); // never throws
 * if (r.ok) use(r.bytes); else deadLetter(r.reason, r.message);
 */
import * as dns from 'node:dns';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';

export interface FetchLimits {
  timeoutMs: number;
  maxBytes: number;
  maxRedirects: number;
  /** host or host:port entries (names or IPs, IPv6 as `::1` or `[::1]:8080`) that bypass the private-address block */
  allowHosts: string[];
  userAgent: string;
}

export type FetchResult =
  | { ok: true; bytes: Buffer; contentType: string | null; finalUrl: string }
  | { ok: false; reason: 'fetch_blocked' | 'fetch_failed' | 'image_too_large'; message: string };

type FetchFailure = Extract<FetchResult, { ok: false }>;

const MAX_URL_CHARS = 8192;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/** Returns a fetcher bound to `limits`; the returned function always resolves, never rejects. */
export function createImageFetcher(limits: FetchLimits): (url: string) => Promise<FetchResult> {
  const allow = parseAllowList(limits.allowHosts);
  return (url: string) =>
    fetchWithLimits(url, limits, allow).catch((err: unknown) => failed('fetch_failed', errorText(err)));
}

// ---------------------------------------------------------------------------------------------------------------
// Address classification

/** Why an address must not be dialled (a stable label), or null for an ordinary public unicast address. */
export type BlockedKind =
  | 'invalid'
  | 'unspecified'
  | 'this-network'
  | 'loopback'
  | 'private'
  | 'cgnat'
  | 'link-local'
  | 'unique-local'
  | 'site-local'
  | 'multicast'
  | 'broadcast'
  | 'documentation'
  | 'benchmark'
  | 'reserved';

const V4_BLOCKS: ReadonlyArray<readonly [string, number, BlockedKind]> = [
  ['0.0.0.0', 8, 'this-network'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'cgnat'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'reserved'],
  ['192.0.2.0', 24, 'documentation'],
  ['192.88.99.0', 24, 'reserved'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmark'],
  ['198.51.100.0', 24, 'documentation'],
  ['203.0.113.0', 24, 'documentation'],
  ['224.0.0.0', 4, 'multicast'],
  ['255.255.255.255', 32, 'broadcast'],
  ['240.0.0.0', 4, 'reserved'],
];

function parseIPv4(s: string): number | null {
  if (!net.isIPv4(s)) return null;
  const p = s.split('.').map(Number);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

function inV4(ip: number, base: string, bits: number): boolean {
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return ((ip & mask) >>> 0) === ((parseIPv4(base)! & mask) >>> 0);
}

function classifyV4(ip: number): BlockedKind | null {
  for (const [base, bits, kind] of V4_BLOCKS) if (inV4(ip, base, bits)) return kind;
  return null;
}

/** Eight 16-bit groups of an IPv6 address (zone id dropped), or null if it is not one. */
function parseIPv6(input: string): number[] | null {
  const s = input.split('%')[0];
  if (!net.isIPv6(s)) return null;
  let head = s;
  const tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const n = parseIPv4(v4[1]);
    if (n === null) return null;
    tail.push(n >>> 16, n & 0xffff);
    head = s.slice(0, s.length - v4[1].length);
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1);
  }
  const groups = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  let out: number[];
  if (head.includes('::')) {
    const [l, r] = head.split('::');
    const left = groups(l);
    const right = [...groups(r), ...tail];
    out = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  } else {
    out = [...groups(head), ...tail];
  }
  return out.length === 8 && out.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? out : null;
}

function classifyV6(g: number[]): BlockedKind | null {
  const embeddedV4 = (hi: number, lo: number): number => ((hi << 16) | lo) >>> 0;
  const zeros = (from: number, to: number): boolean => g.slice(from, to).every((x) => x === 0);
  if (zeros(0, 8)) return 'unspecified';
  if (zeros(0, 7) && g[7] === 1) return 'loopback';
  if (zeros(0, 5) && g[5] === 0xffff) return classifyV4(embeddedV4(g[6], g[7])); // IPv4-mapped
  if (zeros(0, 6)) return 'reserved'; // IPv4-compatible (deprecated)
  if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return classifyV4(embeddedV4(g[6], g[7])); // NAT64
  if (g[0] === 0x64 && g[1] === 0xff9b && g[2] === 1) return 'reserved'; // local-use NAT64
  if (g[0] === 0x100 && zeros(1, 4)) return 'reserved'; // discard-only
  if (g[0] === 0x2001 && g[1] === 0xdb8) return 'documentation';
  if (g[0] === 0x2001 && g[1] < 0x200) return 'reserved'; // IETF protocol assignments, Teredo among them
  if (g[0] === 0x2002) return classifyV4(embeddedV4(g[1], g[2])); // 6to4
  if (g[0] === 0x3fff && g[1] < 0x1000) return 'documentation';
  if ((g[0] & 0xfe00) === 0xfc00) return 'unique-local';
  if ((g[0] & 0xffc0) === 0xfe80) return 'link-local';
  if ((g[0] & 0xffc0) === 0xfec0) return 'site-local';
  if ((g[0] & 0xff00) === 0xff00) return 'multicast';
  return null;
}

/** Classifies an IP literal (IPv4, IPv6, IPv6 with zone or brackets); anything else is 'invalid'. */
export function classifyAddress(address: string): BlockedKind | null {
  const a = stripBrackets(address.trim());
  const v4 = parseIPv4(a);
  if (v4 !== null) return classifyV4(v4);
  const v6 = parseIPv6(a);
  if (v6 !== null) return classifyV6(v6);
  return 'invalid';
}

// ---------------------------------------------------------------------------------------------------------------
// Allow list

interface AllowEntry {
  host: string;
  port: number | null;
}

function stripBrackets(h: string): string {
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

/** Canonical form so `::1`, `[::1]` and `0:0::1` compare equal, and names compare case-insensitively. */
function canonicalHost(h: string): string {
  const s = stripBrackets(h.trim()).toLowerCase().replace(/\.$/, '');
  const v6 = parseIPv6(s);
  return v6 ? v6.map((x) => x.toString(16)).join(':') : s;
}

function parseAllowList(entries: string[]): AllowEntry[] {
  return entries
    .map((e) => e.trim())
    .filter((e) => e.length > 0)
    .map((e): AllowEntry => {
      const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(e);
      if (bracketed) return { host: canonicalHost(bracketed[1]), port: bracketed[2] ? Number(bracketed[2]) : null };
      const hostPort = /^([^:]+):(\d+)$/.exec(e);
      if (hostPort) return { host: canonicalHost(hostPort[1]), port: Number(hostPort[2]) };
      return { host: canonicalHost(e), port: null };
    });
}

function isAllowed(allow: AllowEntry[], host: string, port: number): boolean {
  const h = canonicalHost(host);
  return allow.some((a) => a.host === h && (a.port === null || a.port === port));
}

// ---------------------------------------------------------------------------------------------------------------
// Fetching

function failed(reason: FetchFailure['reason'], message: string): FetchFailure {
  return { ok: false, reason, message };
}

function errorText(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | null;
  const msg = e && typeof e.message === 'string' ? e.message : String(err);
  const code = e && typeof e.code === 'string' && !msg.includes(e.code) ? ` (${e.code})` : '';
  return oneLine(msg + code);
}

function oneLine(s: string, max = 300): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max)}...` : t;
}

function shortUrl(u: string): string {
  return oneLine(u, 200);
}

/** Rejects when `signal` aborts; DNS lookups cannot be cancelled, so the race stands in for that. */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new Error('aborted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new Error('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

interface Target {
  addresses: dns.LookupAddress[];
}

async function resolveChecked(
  host: string,
  port: number,
  allow: AllowEntry[],
  signal: AbortSignal,
): Promise<Target | FetchFailure> {
  const bare = stripBrackets(host);
  const hostAllowed = isAllowed(allow, bare, port);
  let addresses: dns.LookupAddress[];
  if (net.isIP(bare)) {
    addresses = [{ address: bare, family: net.isIPv6(bare) ? 6 : 4 }];
  } else {
    try {
      addresses = await abortable(dns.promises.lookup(bare, { all: true, verbatim: true }), signal);
    } catch (err) {
      if (signal.aborted) throw err;
      return failed('fetch_failed', `DNS lookup of ${bare} failed: ${errorText(err)}`);
    }
    if (addresses.length === 0) return failed('fetch_failed', `DNS lookup of ${bare} returned no address`);
  }
  for (const a of addresses) {
    const kind = classifyAddress(a.address);
    if (kind !== null && !hostAllowed && !isAllowed(allow, a.address, port)) {
      const via = a.address === bare ? '' : ` (${bare} resolves to ${a.address})`;
      return failed('fetch_blocked', `${kind} address ${a.address}${via} is not allow-listed`);
    }
  }
  return { addresses };
}

/** A `lookup` for the request that can only answer with the addresses already checked. */
function pinnedLookup(target: Target): net.LookupFunction {
  return (_hostname, options, callback) => {
    const fam = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : options.family;
    const wanted = fam === 4 || fam === 6 ? fam : 0;
    const list = target.addresses.filter((a) => wanted === 0 || a.family === wanted);
    if (list.length === 0) {
      const err: NodeJS.ErrnoException = new Error(`no checked address of family ${wanted}`);
      err.code = 'ENOTFOUND';
      callback(err, '', 0);
    } else if (options.all) {
      callback(null, list);
    } else {
      callback(null, list[0].address, list[0].family);
    }
  };
}

function request(u: URL, target: Target, limits: FetchLimits, signal: AbortSignal): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(
      u,
      {
        method: 'GET',
        agent: false,
        signal,
        lookup: pinnedLookup(target),
        headers: {
          'user-agent': limits.userAgent,
          accept: 'image/*,*/*;q=0.8',
          'accept-encoding': 'identity',
          connection: 'close',
        },
      },
      (res) => {
        // An error after this point surfaces through the body stream; keep a listener so it cannot go unhandled.
        res.on('error', () => undefined);
        resolve(res);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

async function readBody(
  res: http.IncomingMessage,
  maxBytes: number,
  url: string,
): Promise<{ bytes: Buffer } | FetchFailure> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > maxBytes) {
      res.destroy();
      return failed('image_too_large', `body of ${shortUrl(url)} exceeds ${maxBytes} bytes`);
    }
    chunks.push(chunk);
  }
  return { bytes: Buffer.concat(chunks, total) };
}

async function fetchWithLimits(rawUrl: string, limits: FetchLimits, allow: AllowEntry[]): Promise<FetchResult> {
  if (typeof rawUrl !== 'string' || rawUrl.length === 0) return failed('fetch_failed', 'empty URL');
  if (rawUrl.length > MAX_URL_CHARS) return failed('fetch_failed', `URL longer than ${MAX_URL_CHARS} characters`);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), Math.max(1, limits.timeoutMs));
  let current = rawUrl;
  try {
    for (let hop = 0; ; hop++) {
      let u: URL;
      try {
        u = new URL(current);
      } catch {
        return failed('fetch_failed', `invalid URL: ${shortUrl(current)}`);
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') {
        const where = hop === 0 ? '' : ` (redirect ${hop} from ${shortUrl(rawUrl)})`;
        return failed('fetch_blocked', `scheme ${u.protocol} not allowed: ${shortUrl(current)}${where}`);
      }
      const port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
      const target = await resolveChecked(u.hostname, port, allow, controller.signal);
      if ('ok' in target) {
        return hop === 0 ? target : { ...target, message: `${target.message} (redirect ${hop} to ${shortUrl(current)})` };
      }
      const res = await request(u, target, limits, controller.signal);
      const status = res.statusCode ?? 0;
      if (REDIRECT_STATUSES.has(status)) {
        const location = res.headers.location;
        res.destroy();
        if (!location) return failed('fetch_failed', `HTTP ${status} without Location from ${shortUrl(current)}`);
        if (hop >= limits.maxRedirects) {
          return failed('fetch_failed', `more than ${limits.maxRedirects} redirects from ${shortUrl(rawUrl)}`);
        }
        try {
          current = new URL(location, u).toString();
        } catch {
          return failed('fetch_failed', `invalid redirect Location ${shortUrl(location)}`);
        }
        continue;
      }
      if (status < 200 || status >= 300) {
        res.destroy();
        return failed('fetch_failed', `HTTP ${status} from ${shortUrl(current)}`);
      }
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > limits.maxBytes) {
        res.destroy();
        return failed('image_too_large', `Content-Length ${declared} exceeds ${limits.maxBytes} bytes: ${shortUrl(current)}`);
      }
      const body = await readBody(res, limits.maxBytes, current);
      if ('ok' in body) return body;
      const ct = res.headers['content-type'];
      return { ok: true, bytes: body.bytes, contentType: typeof ct === 'string' ? ct : null, finalUrl: current };
    }
  } catch (err) {
    if (controller.signal.aborted) {
      return failed('fetch_failed', `timed out after ${limits.timeoutMs} ms: ${shortUrl(current)}`);
    }
    return failed('fetch_failed', `${errorText(err)}: ${shortUrl(current)}`);
  } finally {
    clearTimeout(timer);
  }
}
