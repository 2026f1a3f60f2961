/**
 * Can we reach the services at all? Before kafkajs and the registry client start their own retries
 * (about 49 s of silence for a closed broker port), say where we connect and probe each address with
 * one TCP connection under a deadline, so a wrong address or a service that is down is one line that
 * names the address and the cause.
 *
 * @example
 * await checkServices({ brokers: ['127.0.0.1:9092'], registry: 'http://127.0.0.1:8080/apis/ccompat/v7', timeoutMs: 10_000 });
 */
import * as net from 'node:net';

/** A service that cannot be reached: printed as one line, exit code 1. */
export class ConnectError extends Error {}

export interface Address {
  host: string;
  port: number;
}

/** `host:port`, `[v6]:port` */
export function parseHostPort(text: string): Address {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text.trim());
  if (!m) throw new ConnectError(`"${text}" is not host:port`);
  return { host: m[1], port: Number(m[2]) };
}

/** host and port of an http(s) URL (default ports filled in) */
export function urlAddress(url: string): Address {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConnectError(`schema registry "${url}" is not a URL (e.g. http://127.0.0.1:8080/apis/ccompat/v7)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConnectError(`schema registry "${url}" must be an http or https URL`);
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80 };
}

const CAUSES: Record<string, string> = {
  ECONNREFUSED: 'connection refused: nothing listens there',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ECONNRESET: 'connection reset',
};

const seconds = (ms: number): string => `${Number((ms / 1000).toFixed(3))} s`;

/** Resolves once a TCP connection to `a` opens (and closes it); rejects with the cause, or after `timeoutMs`. */
export function probeTcp(a: Address, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: a.host, port: a.port });
    const done = (err?: string): void => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(new Error(err));
      else resolve();
    };
    const timer = setTimeout(() => done(`no answer within ${seconds(timeoutMs)}`), timeoutMs);
    socket.once('connect', () => done());
    socket.once('error', (e: NodeJS.ErrnoException) => done(e.code ? `${CAUSES[e.code] ?? e.message} (${e.code})` : e.message));
  });
}

/** `p`, or a ConnectError with `message(the timeout in words)` when it takes longer than `timeoutMs`. */
export async function withDeadline<T>(p: Promise<T>, timeoutMs: number, message: (within: string) => string, onTimeout?: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout?.();
      reject(new ConnectError(message(`within ${seconds(timeoutMs)}`)));
    }, timeoutMs);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

export interface Services {
  brokers?: string[];
  /** a `mock://` registry is in-process and not probed */
  registry?: string | null;
  timeoutMs: number;
  log?: (line: string) => void;
}

/**
 * Says "connecting to ..." for Kafka and the registry at once, then probes every address in parallel.
 * Kafka needs one reachable bootstrap broker. Throws one ConnectError naming the addresses and causes.
 */
export async function checkServices(s: Services): Promise<void> {
  const log = s.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const brokers = s.brokers ?? [];
  const registry = s.registry && !s.registry.startsWith('mock://') ? s.registry : null;
  const brokerAddrs = brokers.map(parseHostPort);
  const registryAddr = registry ? urlAddress(registry) : null;
  if (brokers.length) log(`squeeze: connecting to Kafka at ${brokers.join(',')}...`);
  if (registry) log(`squeeze: connecting to the schema registry at ${registry}...`);
  const outcome = (a: Address): Promise<string | null> => probeTcp(a, s.timeoutMs).then(() => null, (e: Error) => e.message);
  const [brokerFailures, registryFailure] = await Promise.all([
    Promise.all(brokerAddrs.map(outcome)),
    registryAddr ? outcome(registryAddr) : Promise.resolve(null),
  ]);
  if (brokers.length && brokerFailures.every((f) => f !== null)) {
    throw new ConnectError(`cannot reach Kafka at ${brokers.map((b, i) => `${b}: ${brokerFailures[i]}`).join('; ')}`);
  }
  if (registry && registryFailure) {
    throw new ConnectError(`cannot reach the schema registry at ${registry} (${registryAddr!.host}:${registryAddr!.port}): ${registryFailure}`);
  }
}
