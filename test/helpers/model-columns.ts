import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { duckQuery, sqlQuote } from './duckdb';

export const BUILTIN_BUNDLE_JSON = join(__dirname, '..', '..', '..', 'models', 'builtin', 'bundle.json');

/**
 * Asserts that the rows under `glob` came through the built-in bundle: every row names its version and
 * keeps 32 of 64 patches; most are tagged and score as matched; enrichment rewrote some captions.
 * Returns false (and says so) when the bundle is absent.
 */
export async function assertModelColumns(glob: string): Promise<boolean> {
  if (!existsSync(BUILTIN_BUNDLE_JSON)) {
    console.log('models/builtin absent: model columns not checked');
    return false;
  }
  const version = JSON.parse(readFileSync(BUILTIN_BUNDLE_JSON, 'utf8')).version as string;
  const [m] = await duckQuery(
    `SELECT count(*) AS n, count(*) FILTER (WHERE model_version = ${sqlQuote(version)}) AS named,
            count(*) FILTER (WHERE len(kept_patches) = 32 AND grid_rows = 8 AND grid_cols = 8 AND keep_ratio = 0.5) AS condensed,
            count(*) FILTER (WHERE len(tags) > 0) AS tagged, count(*) FILTER (WHERE clip_score > 0.3) AS matched,
            count(*) FILTER (WHERE caption <> caption_raw) AS enriched
     FROM read_parquet(${sqlQuote(glob)})`,
  );
  const n = Number(m.n);
  assert.ok(n > 0, 'rows to check');
  assert.equal(Number(m.named), n, 'every row names the bundle version');
  assert.equal(Number(m.condensed), n, 'every row keeps 32 of 64 patches (rho 0.5)');
  assert.ok(Number(m.tagged) > 0.5 * n, `${m.tagged} of ${n} rows tagged`);
  assert.ok(Number(m.matched) > 0.5 * n, `${m.matched} of ${n} rows with clip_score > 0.3`);
  assert.ok(Number(m.enriched) > 0, 'enrich rewrote some captions');
  return true;
}
