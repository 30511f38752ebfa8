// Several runs of the PyTorch peer (../shared/gpu/peer_torch.py) in one device call, merged into one set of numbers:
// each numeric value the median of the runs that have it (nested objects merged key by key), anything else the first
// run's. On the H200 the peer's own times moved by up to 12% between calls of the same day while owlet's moved by 2%
// (bench/results/gpu-2026-11-27-h200-s17-call3/README.md), so a ratio against one peer run carries the peer's
// spread; run.sh's PEER_RUNS=N runs it N times and check.mjs --summary / --steps read them all through this.

export type PeerValue = number | string | boolean | null | PeerValue[] | { [k: string]: PeerValue };
export type PeerRun = Record<string, PeerValue>;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  // (the mean of the middle two to 6 significant digits: the peer prints at most 4, and the summary prints these)
  return s.length % 2 ? s[m] : Number(((s[m - 1] + s[m]) / 2).toPrecision(6));
}

type PeerObject = { [k: string]: PeerValue };
const isObject = (v: PeerValue): v is PeerObject => typeof v === 'object' && v !== null && !Array.isArray(v);

function merge(values: PeerValue[]): PeerValue {
  if (values.every((v) => typeof v === 'number')) return median(values as number[]);
  if (!values.every(isObject)) return values[0];
  const objects = values as PeerObject[], out: PeerObject = {};
  for (const k of new Set(objects.flatMap((v) => Object.keys(v))))
    out[k] = merge(objects.flatMap((v) => (k in v ? [v[k]] : [])));
  return out;
}

/** The runs merged (see the file's header); one run comes back as it is. Throws on none. */
export function medianPeer(runs: PeerRun[]): PeerRun {
  if (!runs.length) throw new Error('medianPeer: no peer runs');
  return merge(runs) as PeerRun;
}
