// Per-op timing of a backend, for finding where a step's time goes (scripts/gpu/train-check.ts prints it). Nothing is
// wrapped unless OWLET_PROFILE_OPS=1 when an addon loads; then timing is switched on and off with setOpProfiling:
// - 'sync': every native call is followed by a device synchronisation and timed on the host, so an entry is that op's
//   launch plus its kernels; the sum over a step is the device time plus one sync latency per call;
// - 'host': calls are timed without synchronising: the host's own cost per call (launch, allocation, argument checks);
//   the step's time minus the sum is spent in JS or waiting on the device;
// - 'device': each call is bracketed by two marks on the device's queue (timelineMark, no synchronisation) and
//   deviceTimeline() turns the times the device reached them into each op's device time and the device's idle gaps
//   between ops: where the device waited for the host. The marks cost the host a few µs each, so the gaps are an
//   upper bound of an unprofiled step's.
// Keys are the op's name and the shapes of its tensor arguments, so each layer shape's GEMMs are told apart.
export interface OpStat { op: string; calls: number; ms: number }
export type OpProfiling = 'sync' | 'host' | 'device' | null;

const stats = new Map<string, OpStat>();
const NOT_TIMED = new Set(['synchronize', 'memory', 'resetPeakMemory', 'info', 'deviceCount', 'setNumThreads', 'timelineMark', 'timelineRead']);
let mode: OpProfiling = null;
// 'device' mode: per addon ('cpu', 'cuda': each has its own timeline), the key of each bracketed call in order (its
// marks are 2i and 2i + 1 of that addon's timeline).
const marked = new Map<string, string[]>();

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

/** fn, timed while profiling is on (sync: the raw addon's synchronize; mark: its timelineMark, absent in addons
 *  without one; addon: which addon's timeline the marks go to, e.g. 'cuda'). */
export function profiled(name: string, fn: (...args: unknown[]) => unknown, sync: () => void,
  mark?: () => void, addon = ''): (...args: unknown[]) => unknown {
  if (NOT_TIMED.has(name)) return fn;
  return (...args: unknown[]) => {
    if (!mode) return fn(...args);
    if (mode === 'device') {
      if (!mark) return fn(...args);
      mark();
      const r = fn(...args);
      mark();
      let keys = marked.get(addon);
      if (!keys) marked.set(addon, (keys = []));
      keys.push(key(name, args));
      return r;
    }
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
  marked.clear();
}

export interface DeviceTimeline {
  /** first mark to last */
  span_ms: number;
  /** the device inside the bracketed calls */
  busy_ms: number;
  /** the device between them: waiting for the host (or for work not bracketed) */
  idle_ms: number;
  calls: number;
  /** device ms per op and shapes, the most expensive first */
  ops: OpStat[];
  /** the longest idle gaps, with the op the device waited for */
  gaps: OpStat[];
}

/** 'device' mode's result for one addon (its `backend` name), from the times its device reached the marks (that
 *  backend's timelineRead()); forgets the addon's bracketed calls. */
export function deviceTimeline(times: Float64Array, addon: string): DeviceTimeline {
  const keys = marked.get(addon) ?? [];
  marked.delete(addon);
  const n = keys.length;
  if (times.length !== 2 * n) {
    throw new Error(`deviceTimeline: ${times.length} marks read for ${n} bracketed calls of ${addon} (a mark was read or made elsewhere)`);
  }
  const busy = new Map<string, OpStat>(), gaps: OpStat[] = [];
  let busyMs = 0, idleMs = 0;
  for (let i = 0; i < n; i++) {
    const k = keys[i], b = times[2 * i + 1] - times[2 * i], s = busy.get(k) ?? { op: k, calls: 0, ms: 0 };
    s.calls++; s.ms += b; busy.set(k, s); busyMs += b;
    if (i > 0) {
      const g = times[2 * i] - times[2 * i - 1];
      idleMs += g;
      gaps.push({ op: `before #${i} ${k}`, calls: 1, ms: g });
    }
  }
  return {
    span_ms: n ? times[2 * n - 1] - times[0] : 0, busy_ms: busyMs, idle_ms: idleMs, calls: n,
    ops: [...busy.values()].sort((a, b) => b.ms - a.ms), gaps: gaps.sort((a, b) => b.ms - a.ms).slice(0, 20),
  };
}
