/**
 * deploy/k8s: `validate.sh` renders the kustomize base and every overlay and checks every resource
 * with `kubeconform -strict` against schemas it prepared offline (Kubernetes, KEDA, Strimzi); the
 * rendered manifests agree where Squeeze needs them to (topics, consumer group, partitions versus
 * replicas, the shared volume); and the same schemas reject broken manifests.
 * Skips with one line when `go` is not installed, or when validate.sh names another missing
 * prerequisite (exit 3: python3, Java 21+, Maven, curl). The first run builds kustomize and
 * kubeconform and prepares the schemas (needs the Go proxy and Maven Central); later runs reuse
 * deploy/.cache/k8s-tools and take seconds.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ROOT } from '../helpers/cli';

const SCRIPT = join(ROOT, 'deploy', 'k8s', 'validate.sh');
const TARGETS = { base: 'base', dev: 'overlays/dev', production: 'overlays/production', 'object-store': 'overlays/object-store' } as const;
/** the targets whose curators and trainer share a ReadWriteMany volume (the others use an object store) */
const SHARED_VOLUME: Target[] = ['base', 'dev', 'production'];
type Target = keyof typeof TARGETS;

interface EnvVar { name: string; value?: string; valueFrom?: { configMapKeyRef?: { name: string; key: string } } }
interface Container { name: string; args?: string[]; command?: string[]; env?: EnvVar[]; envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string; optional?: boolean } }[]; volumeMounts?: { name: string; mountPath: string }[]; ports?: { containerPort: number }[] }
interface PodSpec { containers: Container[]; initContainers?: Container[]; volumes?: { name: string; persistentVolumeClaim?: { claimName: string }; emptyDir?: Record<string, unknown> }[] }
interface Resource {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  data?: Record<string, string>;
  spec?: Record<string, unknown>;
}
interface Deployment extends Resource { spec: { template: { metadata: { annotations?: Record<string, string> }; spec: PodSpec } } }
interface KafkaTopic extends Resource { spec: { topicName?: string; partitions: number; replicas: number } }
interface ScaledObject extends Resource {
  spec: { scaleTargetRef: { apiVersion?: string; kind?: string; name: string }; minReplicaCount: number; maxReplicaCount: number; triggers: { type: string; metadata: Record<string, string> }[] };
}

interface Ran { code: number | null; out: string; seconds: number }
function run(args: string[]): Promise<Ran> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const p = spawn('bash', [SCRIPT, ...args], { cwd: ROOT, env: { ...process.env, GO_BUILD_P: process.env.GO_BUILD_P ?? '1' } });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('error', reject);
    p.on('exit', (code) => resolve({ code, out, seconds: (Date.now() - t0) / 1000 }));
  });
}

const noGo = spawnSync('go', ['version']).status === 0 ? false : 'go is not installed: the offline Kubernetes manifest check builds kustomize and kubeconform with it';
const renderDir = mkdtempSync(join(tmpdir(), 'squeeze-k8s-'));
after(() => rmSync(renderDir, { recursive: true, force: true }));
let validated: Promise<Ran> | null = null;
const validate = () => (validated ??= run(['--render-dir', renderDir]));
/** the one-line reason validate.sh gives when a prerequisite is missing (exit 3), else null */
const missing = (r: Ran) => (r.code === 3 ? r.out.trim().split('\n').pop() ?? 'a prerequisite is missing' : null);

async function rendered(t: Target): Promise<Resource[]> {
  const r = await validate();
  assert.equal(r.code, 0, r.out);
  return JSON.parse(readFileSync(join(renderDir, `${t}.json`), 'utf8')) as Resource[];
}
const one = <T extends Resource>(rs: Resource[], kind: string, name: string): T => {
  const found = rs.filter((r) => r.kind === kind && r.metadata.name === name);
  assert.equal(found.length, 1, `one ${kind} ${name}`);
  return found[0] as T;
};
const topics = (rs: Resource[]) => new Map(rs.filter((r) => r.kind === 'KafkaTopic').map((r) => [(r as KafkaTopic).spec.topicName ?? r.metadata.name, r as KafkaTopic]));
const flag = (args: string[], name: string) => {
  const i = args.indexOf(name);
  assert.ok(i >= 0 && i + 1 < args.length, `${name} in ${args.join(' ')}`);
  return args[i + 1];
};
/** the container's args with $(VAR) expanded as the kubelet does, from values and ConfigMap keys */
function expandedArgs(rs: Resource[], c: Container): string[] {
  const env = new Map<string, string>();
  for (const e of c.env ?? []) {
    const ref = e.valueFrom?.configMapKeyRef;
    const value = ref ? one(rs, 'ConfigMap', ref.name).data?.[ref.key] : e.value;
    assert.ok(value !== undefined, `env ${e.name} of ${c.name} resolves`);
    env.set(e.name, value);
  }
  return (c.args ?? []).map((a) => a.replace(/\$\((\w+)\)/g, (m, k: string) => env.get(k) ?? m));
}

test('validate.sh: base and every overlay render, and kubeconform finds every resource valid, none skipped', { skip: noGo, timeout: 30 * 60_000 }, async (t) => {
  const r = await validate();
  if (missing(r)) return t.skip(missing(r)!);
  assert.equal(r.code, 0, r.out);
  t.diagnostic(`validate.sh took ${r.seconds.toFixed(1)} s`);
  for (const target of Object.values(TARGETS)) {
    const line = r.out.split('\n').find((l) => l.startsWith(`validate.sh: ${target}: `) && l.includes('Summary:'));
    assert.ok(line, `a summary for ${target} in:\n${r.out}`);
    const m = line.match(/ok: Summary: (\d+) resources? found .* - Valid: (\d+), Invalid: (\d+), Errors: (\d+), Skipped: (\d+)/);
    assert.ok(m, line);
    const [found, valid, invalid, errors, skipped] = m.slice(1).map(Number);
    assert.ok(found >= 15, `${target}: ${found} resources`);
    assert.deepEqual({ valid, invalid, errors, skipped }, { valid: found, invalid: 0, errors: 0, skipped: 0 }, line);
  }
});

test('base: KafkaTopics for the input, its dead letters, the manifests and the control topic', { skip: noGo, timeout: 30 * 60_000 }, async (t) => {
  if (missing(await validate())) return t.skip(missing(await validate())!);
  const rs = await rendered('base');
  const ts = topics(rs);
  for (const name of ['crawl', 'crawl.dlq', 'crawl.manifest', 'squeeze.control']) assert.ok(ts.has(name), `topic ${name} (have ${[...ts.keys()].join(', ')})`);
  assert.equal(ts.get('crawl.dlq')!.spec.partitions, ts.get('crawl')!.spec.partitions, 'dead letters have the input\'s partitions');
  assert.equal(ts.get('crawl.manifest')!.spec.partitions, 1);
  assert.equal(ts.get('squeeze.control')!.spec.partitions, 1);
  const kafka = one<Resource>(rs, 'Kafka', 'squeeze');
  assert.equal(kafka.apiVersion, 'kafka.strimzi.io/v1');
  for (const topic of ts.values()) assert.equal(topic.metadata.labels?.['strimzi.io/cluster'], 'squeeze');
});

test('every overlay: the ScaledObject scales the curator Deployment up to the crawl topic\'s partitions', { skip: noGo, timeout: 30 * 60_000 }, async (t) => {
  if (missing(await validate())) return t.skip(missing(await validate())!);
  const seen: Record<string, number> = {};
  for (const target of Object.keys(TARGETS) as Target[]) {
    const rs = await rendered(target);
    const so = one<ScaledObject>(rs, 'ScaledObject', 'squeeze-curator');
    assert.deepEqual({ ...so.spec.scaleTargetRef }, { apiVersion: 'apps/v1', kind: 'Deployment', name: 'squeeze-curator' });
    one<Deployment>(rs, 'Deployment', so.spec.scaleTargetRef.name);
    const ts = topics(rs);
    assert.equal(so.spec.maxReplicaCount, ts.get('crawl')!.spec.partitions, `${target}: maxReplicaCount = partitions of crawl`);
    assert.equal(ts.get('crawl.dlq')!.spec.partitions, ts.get('crawl')!.spec.partitions, `${target}: crawl.dlq has crawl's partitions`);
    assert.equal(so.spec.minReplicaCount, 1);
    seen[target] = so.spec.maxReplicaCount;
  }
  assert.deepEqual(seen, { base: 6, dev: 2, production: 24, 'object-store': 6 });
});

test('every overlay: the curator consumes the group, topic and brokers the KEDA trigger measures', { skip: noGo, timeout: 30 * 60_000 }, async (t) => {
  if (missing(await validate())) return t.skip(missing(await validate())!);
  for (const target of Object.keys(TARGETS) as Target[]) {
    const rs = await rendered(target);
    const so = one<ScaledObject>(rs, 'ScaledObject', 'squeeze-curator');
    const trigger = so.spec.triggers.find((x) => x.type === 'kafka');
    assert.ok(trigger, 'a kafka trigger');
    const curator = one<Deployment>(rs, 'Deployment', 'squeeze-curator').spec.template.spec.containers.find((c) => c.name === 'curator')!;
    const args = expandedArgs(rs, curator);
    assert.equal(args[0], 'curate');
    assert.equal(flag(args, '--group'), trigger.metadata.consumerGroup, `${target}: --group`);
    assert.equal(flag(args, '--group'), 'squeeze-curators');
    assert.equal(flag(args, '--topic'), trigger.metadata.topic, `${target}: --topic`);
    assert.equal(flag(args, '--brokers'), trigger.metadata.bootstrapServers, `${target}: --brokers`);
    assert.match(flag(args, '--registry'), /^http:\/\/schema-registry\.squeeze\.svc:8080\/apis\/ccompat\/v7$/);
    one<Resource>(rs, 'Service', 'schema-registry');
  }
});

test('shared-volume overlays: curator and trainer mount the same ReadWriteMany claim at /data, and Prometheus finds both', { skip: noGo, timeout: 30 * 60_000 }, async (t) => {
  if (missing(await validate())) return t.skip(missing(await validate())!);
  for (const target of SHARED_VOLUME) {
    const rs = await rendered(target);
    const claims = new Set<string>();
    for (const [name, command, port] of [['squeeze-curator', 'curate', '9464'], ['squeeze-trainer', 'train', '9465']]) {
      const pod = one<Deployment>(rs, 'Deployment', name).spec.template;
      const main = pod.spec.containers[0];
      assert.equal(main.args?.[0], command);
      const mount = main.volumeMounts?.find((m) => m.mountPath === '/data');
      assert.ok(mount, `${name} mounts /data`);
      const claim = pod.spec.volumes?.find((v) => v.name === mount.name)?.persistentVolumeClaim?.claimName;
      assert.ok(claim, `${name}: /data is a PersistentVolumeClaim`);
      claims.add(claim);
      assert.equal(pod.metadata.annotations?.['prometheus.io/scrape'], 'true');
      assert.equal(pod.metadata.annotations?.['prometheus.io/path'], '/metrics');
      assert.equal(pod.metadata.annotations?.['prometheus.io/port'], port);
      assert.ok(main.ports?.some((p) => String(p.containerPort) === port), `${name}: the container declares port ${port}`);
      const flag = (f: string) => main.args?.[main.args.indexOf(f) + 1];
      assert.equal(flag('--prometheus-port'), port, `${name} serves metrics on ${port}`);
      assert.equal(flag('--prometheus-host'), '0.0.0.0', `${name} binds all addresses, so Prometheus can reach it`);
    }
    assert.equal(claims.size, 1, `${target}: one claim for both`);
    const pvc = one<Resource>(rs, 'PersistentVolumeClaim', [...claims][0]);
    assert.deepEqual(pvc.spec?.accessModes, ['ReadWriteMany']);
    const trainer = one<Deployment>(rs, 'Deployment', 'squeeze-trainer').spec.template.spec.containers[0].args!;
    const curator = one<Deployment>(rs, 'Deployment', 'squeeze-curator').spec.template.spec.containers[0].args!;
    assert.equal(flag(trainer, '--shards'), flag(curator, '--out'), 'the trainer follows what the curators write');
    assert.ok(trainer.includes('--follow'));
  }
});

test('object-store overlay: curators write s3://, the trainer follows the same URL, no ReadWriteMany volume, credentials from an optional Secret', { skip: noGo, timeout: 30 * 60_000 }, async (t) => {
  if (missing(await validate())) return t.skip(missing(await validate())!);
  const rs = await rendered('object-store');
  const curatorPod = one<Deployment>(rs, 'Deployment', 'squeeze-curator').spec.template.spec;
  const trainerPod = one<Deployment>(rs, 'Deployment', 'squeeze-trainer').spec.template.spec;
  const curator = curatorPod.containers[0];
  const trainer = trainerPod.containers[0];
  const out = flag(curator.args!, '--out');
  assert.match(out, /^s3:\/\/[a-z0-9.-]+\/\S+$/, 'the curators write to a bucket and prefix');
  assert.equal(flag(trainer.args!, '--shards'), out, 'the trainer follows what the curators write');
  assert.ok(trainer.args!.includes('--follow'));
  // the curator has no claim at all; its scratch (the shard being uploaded) is an emptyDir at /tmp
  assert.ok(!curatorPod.volumes?.some((v) => v.persistentVolumeClaim), `curator volumes: ${JSON.stringify(curatorPod.volumes)}`);
  for (const pod of [curatorPod, trainerPod]) {
    const tmp = pod.containers[0].volumeMounts?.find((m) => m.mountPath === '/tmp');
    assert.ok(tmp && pod.volumes?.find((v) => v.name === tmp.name)?.emptyDir, 'an emptyDir at /tmp');
    const from = pod.containers[0].envFrom ?? [];
    assert.ok(from.some((e) => e.secretRef?.name === 'squeeze-s3' && e.secretRef.optional === true), 'AWS credentials from the optional Secret squeeze-s3');
    const cm = from.find((e) => e.configMapRef)?.configMapRef?.name;
    assert.ok(cm && one<Resource>(rs, 'ConfigMap', cm).data?.AWS_REGION, 'AWS_REGION from a ConfigMap that exists');
  }
  // the only claim left holds the trainer's checkpoints, and only the trainer mounts it
  const pvcs = rs.filter((r) => r.kind === 'PersistentVolumeClaim');
  assert.deepEqual(pvcs.map((p) => p.spec?.accessModes), [['ReadWriteOnce']]);
  const ckpt = flag(trainer.args!, '--checkpoints');
  const mount = trainer.volumeMounts?.find((m) => ckpt.startsWith(m.mountPath + '/'));
  assert.equal(trainerPod.volumes?.find((v) => v.name === mount?.name)?.persistentVolumeClaim?.claimName, pvcs[0]!.metadata.name, `${ckpt} is on the claim`);
  assert.deepEqual(trainerPod.initContainers?.[0]?.command, ['mkdir', '-p', ckpt], 'the init container prepares the checkpoint directory only');
});

test('the same schemas reject broken manifests: a string replica count, an unknown field, a mistyped KafkaTopic field', { skip: noGo, timeout: 30 * 60_000 }, async (t) => {
  if (missing(await validate())) return t.skip(missing(await validate())!);
  const dir = mkdtempSync(join(tmpdir(), 'squeeze-k8s-bad-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'broken.yaml');
  const deployment = (name: string, replicas: string, extra: string) => `apiVersion: apps/v1
kind: Deployment
metadata: {name: ${name}}
spec:
  replicas: ${replicas}
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers:
        - name: x
          image: squeeze:latest${extra}
`;
  writeFileSync(file, [
    deployment('bad-replicas', '"two"', ''),
    deployment('bad-field', '1', '\n          imagePullPolicyy: Always'),
    'apiVersion: kafka.strimzi.io/v1\nkind: KafkaTopic\nmetadata: {name: bad-topic, labels: {strimzi.io/cluster: squeeze}}\nspec: {partitons: 6, replicas: 1}\n',
    deployment('good', '2', ''),
  ].join('---\n'));
  const r = await run(['--files', file]);
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /Deployment bad-replicas is invalid: .*\/spec\/replicas'?: got string, want integer/);
  assert.match(r.out, /Deployment bad-field is invalid: .*additional properties 'imagePullPolicyy' not allowed/);
  assert.match(r.out, /KafkaTopic bad-topic is invalid: .*additional properties 'partitons' not allowed/);
  assert.match(r.out, /Summary: 4 resources found in 1 file - Valid: 1, Invalid: 3, Errors: 0, Skipped: 0/);
});
