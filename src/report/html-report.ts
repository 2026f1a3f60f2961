/**
 * A one-file HTML report of a curated output: what happened to every input (rows, dead letters and
 * filter decisions by reason, from the commit records), histograms of the scores that decided the
 * copies, and a gallery of rows showing the stored (condensed) image with its kept patches outlined,
 * the raw and the enriched caption, tags, scores and copies. Pure: rows and commit records in, a
 * string out (images inline as data URLs, charts as inline SVG), so it opens anywhere offline.
 *
 * @example
 * writeFileSync('report.html', htmlReport({ title: 'squeeze-demo', commits, rows }));
 */
import { sniffFormat } from '../operators/decode-image';
import type { CommitRecord } from '../streams/shards/shard-log';
import { plural } from '../util/plural';

export interface ReportRow {
  id: string;
  image: Buffer | null;
  image_mime?: string | null;
  width: number;
  height: number;
  caption: string;
  caption_raw: string;
  tags: { label: string; score: number }[] | null;
  kept_patches: number[] | null;
  grid_rows: number | null;
  grid_cols: number | null;
  copies: number;
  score: number | null;
  clip_score: number | null;
  scores: Record<string, number> | null;
  model_version: string | null;
  /** the event's trace id, when the curator traced it (commit records' `traces`) */
  trace_id?: string | null;
}

export interface ReportInput {
  title: string;
  commits: CommitRecord[];
  rows: ReportRow[];
  /** rows shown in the gallery (default 48) */
  gallery?: number;
  /** the trainer's held-out evaluations (squeeze train checkpoints), drawn as learning curves */
  learning?: LearningPoint[];
  /** traced rows link to this URL followed by the trace id (default Jaeger's UI on localhost) */
  traceUrl?: string;
}

export const DEFAULT_TRACE_URL = 'http://localhost:16686/trace/';

export interface LearningPoint {
  step: number;
  mean_r5: number;
  i2t_r1: number;
  zero_shot: number;
}

const CURVES: [keyof LearningPoint, string][] = [['mean_r5', '#4a78b5'], ['i2t_r1', '#1c9c4a'], ['zero_shot', '#c2571a']];

/** Held-out metrics (0..1) against the training step, one polyline per metric. */
export function learningSvg(points: LearningPoint[]): string {
  if (points.length === 0) return '';
  const W = 420;
  const H = 160;
  const last = Math.max(1, ...points.map((p) => p.step));
  const x = (s: number) => ((s / last) * (W - 10)).toFixed(1);
  const y = (v: number) => (H - v * H).toFixed(1);
  const lines = CURVES.map(([k, colour]) => `<polyline fill="none" stroke="${colour}" stroke-width="1.5" points="${points.map((p) => `${x(p.step)},${y(p[k] as number)}`).join(' ')}"/>`).join('');
  const legend = CURVES.map(([k, colour], i) => `<text x="${8 + i * 110}" y="12" style="fill:${colour}">${k}</text>`).join('');
  return `<figure><svg viewBox="0 -4 ${W} ${H + 20}" width="${W}" height="${H + 24}" role="img" aria-label="held-out learning curve">${lines}${legend}` +
    `<text x="0" y="${H + 14}">step 0</text><text x="${W}" y="${H + 14}" text-anchor="end">step ${last}</text></svg>` +
    `<figcaption>trainer, held-out: mean recall@5, image-to-text recall@1, zero-shot (0 to 1)</figcaption></figure>`;
}

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const num = (x: number | null | undefined, d = 3): string => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '–');

/** Equal-width histogram bins over [min, max] of the finite values. */
export function histogram(values: number[], bins = 20): { lo: number; hi: number; counts: number[] } {
  const xs = values.filter((v) => Number.isFinite(v));
  if (xs.length === 0) return { lo: 0, hi: 0, counts: [] };
  let lo = Infinity;
  let hi = -Infinity;
  for (const x of xs) {
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  const counts = new Array<number>(bins).fill(0);
  const width = hi > lo ? (hi - lo) / bins : 1;
  for (const x of xs) counts[Math.min(bins - 1, Math.floor((x - lo) / width))]++;
  return { lo, hi, counts };
}

function histogramSvg(label: string, values: number[], weights?: number[]): string {
  const h = histogram(values);
  if (h.counts.length === 0) return `<figure><figcaption>${esc(label)}: no values</figcaption></figure>`;
  // weighted by copies when given: what the trainer will see, not what was kept
  if (weights) {
    h.counts.fill(0);
    const width = h.hi > h.lo ? (h.hi - h.lo) / h.counts.length : 1;
    values.forEach((v, i) => {
      if (Number.isFinite(v)) h.counts[Math.min(h.counts.length - 1, Math.floor((v - h.lo) / width))] += weights[i] ?? 1;
    });
  }
  const W = 300;
  const H = 110;
  const max = Math.max(...h.counts, 1);
  const bw = W / h.counts.length;
  const bars = h.counts
    .map((c, i) => `<rect x="${(i * bw).toFixed(1)}" y="${(H - (c / max) * H).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${((c / max) * H).toFixed(1)}"><title>${c}</title></rect>`)
    .join('');
  return `<figure><svg viewBox="0 -4 ${W} ${H + 20}" width="${W}" height="${H + 24}" role="img" aria-label="${esc(label)}">${bars}` +
    `<text x="0" y="${H + 14}">${num(h.lo, 2)}</text><text x="${W}" y="${H + 14}" text-anchor="end">${num(h.hi, 2)}</text></svg>` +
    `<figcaption>${esc(label)} (n ${values.filter(Number.isFinite).length}, max bin ${max})</figcaption></figure>`;
}

const MIME: Record<string, string> = { jpeg: 'image/jpeg', png: 'image/png', webp: 'image/webp', gif: 'image/gif', heif: 'image/heif', tiff: 'image/tiff' };

/**
 * The stored image's type: the row's `image_mime` when it has one, else sniffed from the first bytes
 * (decode-image's sniffer), else a format-name hint.
 */
export function mimeOf(bytes: Buffer, hint?: string | null): string {
  if (hint && hint.includes('/')) return hint;
  return MIME[sniffFormat(bytes) ?? ''] ?? MIME[(hint ?? '').toLowerCase()] ?? 'application/octet-stream';
}

function tile(r: ReportRow, traceUrl: string): string {
  const W = 240;
  const H = r.width > 0 && r.height > 0 ? Math.round((W * r.height) / r.width) : W;
  const img = r.image && r.image.length > 0 ? `<image href="data:${mimeOf(r.image, r.image_mime)};base64,${r.image.toString('base64')}" width="${W}" height="${H}" preserveAspectRatio="none"/>` : '';
  let patches = '';
  if (r.kept_patches && r.grid_rows && r.grid_cols) {
    const pw = W / r.grid_cols;
    const ph = H / r.grid_rows;
    const kept = new Set(r.kept_patches);
    for (let j = 0; j < r.grid_rows * r.grid_cols; j++) {
      const x = (j % r.grid_cols) * pw;
      const y = Math.floor(j / r.grid_cols) * ph;
      patches += kept.has(j)
        ? `<rect class="kept" x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${pw.toFixed(1)}" height="${ph.toFixed(1)}"/>`
        : `<rect class="dropped" x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${pw.toFixed(1)}" height="${ph.toFixed(1)}"/>`;
    }
  }
  const tags = (r.tags ?? []).map((t) => `${esc(t.label)} ${num(t.score, 2)}`).join(', ') || '–';
  const scores = Object.entries(r.scores ?? {})
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `<span class="kv">${esc(k)}&nbsp;${num(v, 2)}</span>`)
    .join(' · ');
  const changed = r.caption !== r.caption_raw;
  return `<article><svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}">${img}${patches}</svg>
<p class="cap">${esc(r.caption)}</p>${changed ? `<p class="raw">was: ${esc(r.caption_raw.slice(0, 300))}</p>` : ''}
<p>tags: ${tags}</p><p>copies <b>${r.copies}</b> · score ${num(r.score, 2)} · clip ${num(r.clip_score, 2)}${r.kept_patches ? ` · kept ${r.kept_patches.length}/${(r.grid_rows ?? 0) * (r.grid_cols ?? 0)}` : ''}</p>
<p class="small">${scores}</p><p class="small id">${esc(r.id)}</p>${r.trace_id ? `<p class="small">trace <a href="${esc(traceUrl + r.trace_id)}">${esc(r.trace_id)}</a></p>` : ''}</article>`;
}

function countTable(title: string, counts: Record<string, number>): string {
  const entries = Object.entries(counts).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  if (entries.length === 0) return `<h3>${esc(title)}: none</h3>`;
  return `<h3>${esc(title)}</h3><table>${entries.map(([k, n]) => `<tr><td>${esc(k)}</td><td>${n}</td></tr>`).join('')}</table>`;
}

export function htmlReport(input: ReportInput): string {
  const { commits, rows } = input;
  const sum = (f: (c: CommitRecord) => number) => commits.reduce((a, c) => a + f(c), 0);
  const merge = (f: (c: CommitRecord) => Record<string, number>) => {
    const out: Record<string, number> = {};
    for (const c of commits) for (const [k, n] of Object.entries(f(c))) out[k] = (out[k] ?? 0) + n;
    return out;
  };
  const records = sum((c) => c.records);
  const copies = rows.reduce((a, r) => a + r.copies, 0);
  const models = [...new Set(rows.map((r) => r.model_version ?? 'none'))].join(', ');
  const scoreKeys = [...new Set(rows.flatMap((r) => Object.keys(r.scores ?? {})))].sort();
  const w = rows.map((r) => r.copies);
  const charts = [
    histogramSvg('mixed score of written rows', rows.map((r) => r.score ?? NaN)),
    histogramSvg('mixed score, weighted by copies', rows.map((r) => r.score ?? NaN), w),
    histogramSvg('copies per written row', rows.map((r) => r.copies)),
    ...scoreKeys.filter((k) => k !== 'score').map((k) => histogramSvg(k, rows.map((r) => r.scores?.[k] ?? NaN))),
  ];
  const gallery = rows.slice(0, input.gallery ?? 48).map((r) => tile(r, input.traceUrl ?? DEFAULT_TRACE_URL)).join('\n');
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(input.title)}: squeeze report</title><style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}table{border-collapse:collapse}td{padding:2px 10px;border-bottom:1px solid #ddd}
.charts{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}svg rect{fill:#4a78b5}svg text{font-size:10px;fill:#555}
.gallery{display:flex;flex-wrap:wrap;gap:14px}article{width:240px}article p{margin:2px 0}.cap{font-weight:600}.raw{color:#a33}.small{font-size:11px;color:#666}.kv{white-space:nowrap}.id{overflow-wrap:anywhere}
article svg rect.kept{fill:none;stroke:#1c9c4a;stroke-width:1.2}article svg rect.dropped{fill:#000;fill-opacity:.35;stroke:none}
</style></head><body>
<h1>${esc(input.title)}</h1>
<p>${plural(records, 'input record')} in ${plural(commits.length, 'commit record')}: <b>${sum((c) => c.rows)}</b> ${sum((c) => c.rows) === 1 ? 'row' : 'rows'} (${plural(copies, 'copy', 'copies')} for the trainer),
${plural(sum((c) => c.dead), 'dead letter')}, ${sum((c) => c.filtered)} filtered. Model: ${esc(models)}.</p>
<div class="charts">${countTable('dead letters by reason', merge((c) => c.dead_by_reason))}${countTable('filtered by reason', merge((c) => c.filtered_by_reason))}</div>
<h2>Scores</h2><div class="charts">${charts.join('')}</div>
${input.learning?.length ? `<h2>Trainer learning curve</h2><div class="charts">${learningSvg(input.learning)}</div>` : ''}
<h2>Rows (first ${Math.min(rows.length, input.gallery ?? 48)}): stored image, kept patches outlined, dropped ones shaded</h2>
<div class="gallery">${gallery}</div></body></html>
`;
}
