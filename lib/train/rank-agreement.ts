// The ranks of a data-parallel run must run the same configuration: they were never compared, and a learning rate
// or a size given to one rank only (a --set typed on one node, configs that drifted) trained silently wrong, or
// made gloo abort the process on mismatched buffer sizes (found by the concurrency audit of session 9). Rank 0
// gathers every rank's description and all ranks stop with the same error when one differs.
import { basename } from 'node:path';
import { DistributedError } from '../tensor/errors.ts';
import { mapConfigPaths } from './config.ts';
import type { Collectives } from './types.ts';

type J = null | boolean | number | string | J[] | { [k: string]: J };

/** Where `b` first differs from `a` ("optimizer.lr: 0.001 on rank 0, 0.5 here"), or null. */
export function firstDifference(a: J, b: J, path = ''): string | null {
  if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object' && Array.isArray(a) === Array.isArray(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
    for (const k of keys) {
      const d = firstDifference((a as Record<string, J>)[k] ?? null, (b as Record<string, J>)[k] ?? null, path ? `${path}.${k}` : k);
      if (d) return d;
    }
    return null;
  }
  if (JSON.stringify(a) === JSON.stringify(b)) return null;
  const show = (v: J) => { const s = JSON.stringify(v); return s.length > 60 ? `${s.slice(0, 57)}…` : s; };
  return `${path || '(everything)'}: ${show(a)} on rank 0, ${show(b)} there`;
}

/** Throws a DistributedError on every rank when any rank's `mine` (anything JSON can hold) differs from rank 0's;
 *  `what` says what that means ("the ranks …"). */
export function checkRanksAgree(dist: Collectives, mine: unknown, what = 'do not run the same configuration'): void {
  const all = dist.gather(JSON.stringify(mine));
  let verdict = '';
  if (all) {
    const first = JSON.parse(all[0]) as J, diffs: string[] = [];
    for (let r = 1; r < all.length; r++) {
      const d = firstDifference(first, JSON.parse(all[r]) as J);
      if (d) diffs.push(`rank ${r}: ${d}`);
    }
    if (diffs.length) verdict = `the ranks ${what} — ${diffs.slice(0, 4).join('; ')}`;
  }
  verdict = dist.rank === 0 ? dist.shareFromRoot(verdict) : dist.shareFromRoot();
  if (verdict) throw new DistributedError(verdict, 'rendezvous');
}

/** A config as the ranks must share it: where each node keeps its files may differ, their names may not. */
export function comparableConfig(config: unknown): J {
  const c = mapConfigPaths(config, basename) as Record<string, Record<string, J>>;
  delete c.run?.out_dir;
  return c as J;
}
