// Seeded random numbers for tests: owlet's own generator (mulberry32, lib/model/init.ts), so inputs are deterministic
// and sizes can be odd.
import { seededRandom } from '../../lib/model/init.ts';

export const rng = seededRandom;

export function randn(r: () => number, n: number, std = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12), v = r();
    out[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}
