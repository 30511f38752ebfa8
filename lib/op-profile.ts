// Per-op timing of a backend, for finding where a step's time goes (scripts/gpu/train-check.ts prints it). Nothing is
// wrapped unless OWLET_PROFILE_OPS=1 when an addon loads; then timing is switched on and off with setOpProfiling:
// - 'sync': every native call is followed by a device synchronisation and timed on the host, so an entry is that op's
//   launch plus its kernels; the sum over a step is the device time plus one sync latency per call;
// - 'host': calls are timed without synchronising: the host's own cost per call (launch, allocation, argument checks);
//   the step's time minus the sum is spent in JS or waiting on the device.
// Keys are the op's name and the shapes of its tensor arguments, so each layer shape's GEMMs are told apart.
export interface OpStat { op: string; calls: number; ms: number }
export type OpProfiling = 'sync' | 'host' | null;

const stats = new Map<string, OpStat>();
const NOT_TIMED = new Set(['synchronize', 'memory', 'resetPeakMemory', 'info', 'deviceCount', 'setNumThreads']);
let mode: OpProfiling = null;

export function opProfileAvailable(): boolean {
  return process.env.OWLET_PROFILE_OPS === '1';
}

export function setOpProfiling(m: OpProfiling): void {
  mode = m;
}

function key(name: string, args: unknown[]): string {
  const shapes: string[] = [];
  for (const a of args) {
    const s = (a as { shape?: unknown } | null)?.shape;
    if (Array.isArray(s)) shapes.push(`[${s.join(',')}]${(a as { dtype?: string }).dtype === 'bf16' ? 'h' : ''}`);
  }
  return shapes.length ? `${name} ${shapes.join(' ')}` : name;
}

/** fn, timed while profiling is on (sync: the raw addon's synchronize). */
export function profiled(name: string, fn: (...args: unknown[]) => unknown, sync: () => void): (...args: unknown[]) => unknown {
  if (NOT_TIMED.has(name)) return fn;
  return (...args: unknown[]) => {
    if (!mode) return fn(...args);
    const t0 = performance.now();
    const r = fn(...args);
    if (mode === 'sync') sync();
    const k = key(name, args);
    const s = stats.get(k) ?? { op: k, calls: 0, ms: 0 };
    s.calls++;
    s.ms += performance.now() - t0;
    stats.set(k, s);
    return r;
  };
}

/** What was timed since the last reset, the most expensive first. */
export function opProfile(): OpStat[] {
  return [...stats.values()].sort((a, b) => b.ms - a.ms);
}

export function resetOpProfile(): void {
  stats.clear();
}
