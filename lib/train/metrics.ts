// Training metrics: per-step statistics, aggregated into one record per logging step, written as a console line, a
// metrics.jsonl line and TensorBoard scalars (the same values everywhere).
import { closeSync, existsSync, openSync, readFileSync, writeSync, fsyncSync } from 'node:fs';
import { join } from 'node:path';
import { TensorBoardWriter } from './tensorboard.ts';
import { writeFileAtomic } from './fsutil.ts';

/** What one optimizer step did. */
export interface StepStats {
  step: number;
  /** Mean of the micro-batch losses (HF Trainer's reported loss); NaN/Inf when the step was skipped for it. */
  loss: number;
  /** Global L2 norm of the gradients before clipping (NaN when not computed). */
  gradNorm: number;
  lr: number;
  ms: number;
  /** Host time spent queueing the step's work (forward, backward, update) without waiting for the device, when a GPU
   *  decided the update (one process): close to `ms`, the host sets the pace, not the device. */
  queueMs?: number;
  tokens: number;
  images: number;
  /** Target tokens counted in the loss, and how many were predicted right (accuracy, when the model reports it). */
  counted: number;
  correct?: number;
  skipped: boolean;
  /** FLOPs of the step, when the caller can count them. */
  flops?: number;
}

export interface LogRecord {
  step: number;
  time: string;
  loss: number | null;
  grad_norm: number | null;
  lr: number;
  ms_per_step: number;
  /** The host's own time per step (StepStats.queueMs), when every step of the interval reported it: close to
   *  ms_per_step, the host (JS, launches, data) sets the pace rather than the device. */
  host_ms_per_step?: number;
  tokens_per_s: number;
  images_per_s: number;
  /** Achieved FLOP/s over the peak FLOP/s setting (null when either is unknown). */
  utilisation: number | null;
  peak_mem_bytes: number | null;
  accuracy?: number;
  skipped: number;
  [evalKey: `eval_${string}`]: number;
}

/** Averages the steps since the last logging step (loss and grad norm over the steps that were applied). */
export class IntervalMeter {
  private steps: StepStats[] = [];
  constructor(private readonly peakFlops?: number) {}

  add(s: StepStats): void { this.steps.push(s); }
  get size(): number { return this.steps.length; }

  flush(peakMemBytes: number | null, evalMetrics: Record<string, number> = {}): LogRecord | null {
    if (!this.steps.length) return null;
    const s = this.steps;
    this.steps = [];
    const applied = s.filter((x) => !x.skipped);
    const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
    const ms = s.reduce((a, x) => a + x.ms, 0);
    const sec = ms / 1000;
    const tokens = s.reduce((a, x) => a + x.tokens, 0);
    const images = s.reduce((a, x) => a + x.images, 0);
    const flops = s.every((x) => x.flops !== undefined) ? s.reduce((a, x) => a + x.flops!, 0) : undefined;
    const counted = applied.reduce((a, x) => a + x.counted, 0);
    const correct = applied.every((x) => x.correct !== undefined) ? applied.reduce((a, x) => a + x.correct!, 0) : undefined;
    const last = s[s.length - 1];
    const rec: LogRecord = {
      step: last.step,
      time: new Date().toISOString(),
      loss: mean(applied.map((x) => x.loss)),
      grad_norm: mean(applied.map((x) => x.gradNorm)),
      lr: last.lr,
      ms_per_step: ms / s.length,
      tokens_per_s: sec > 0 ? tokens / sec : 0,
      images_per_s: sec > 0 ? images / sec : 0,
      utilisation: flops !== undefined && this.peakFlops && sec > 0 ? flops / sec / this.peakFlops : null,
      peak_mem_bytes: peakMemBytes,
      skipped: s.length - applied.length,
    };
    if (s.every((x) => x.queueMs !== undefined)) rec.host_ms_per_step = s.reduce((a, x) => a + x.queueMs!, 0) / s.length;
    if (correct !== undefined && counted > 0) rec.accuracy = correct / counted;
    for (const [k, v] of Object.entries(evalMetrics)) rec[`eval_${k}`] = v;
    return rec;
  }
}

const fmtBytes = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(1)} MiB` : `${(b / 2 ** 10).toFixed(1)} KiB`);
const fmtNum = (x: number | null, digits = 4) => (x === null ? '-' : Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(2) : x.toFixed(digits));

/** The console line of a record. */
export function formatRecord(r: LogRecord, totalSteps?: number): string {
  const parts = [
    `step ${r.step}${totalSteps ? `/${totalSteps}` : ''}`,
    `loss ${fmtNum(r.loss)}`,
    `grad ${fmtNum(r.grad_norm, 3)}`,
    `lr ${r.lr.toExponential(2)}`,
    `${r.ms_per_step.toFixed(0)} ms/step${r.host_ms_per_step !== undefined ? ` (host ${r.host_ms_per_step.toFixed(0)})` : ''}`,
    `${r.tokens_per_s.toFixed(0)} tok/s`,
    `${r.images_per_s.toFixed(1)} img/s`,
  ];
  if (r.utilisation !== null) parts.push(`util ${(100 * r.utilisation).toFixed(1)}%`);
  if (r.peak_mem_bytes !== null) parts.push(`peak ${fmtBytes(r.peak_mem_bytes)}`);
  if (r.accuracy !== undefined) parts.push(`acc ${(100 * r.accuracy).toFixed(1)}%`);
  if (r.skipped) parts.push(`skipped ${r.skipped}`);
  for (const [k, v] of Object.entries(r)) if (k.startsWith('eval_')) parts.push(`${k} ${fmtNum(v as number)}`);
  return parts.join(' | ');
}

export interface MetricsWriterOptions {
  tensorboard?: boolean;
  /** Resuming at this step: records after it (from the interrupted attempt) are dropped from metrics.jsonl, and
   *  TensorBoard is told to drop its events after it (SessionLog START; step 0 for a fresh run). */
  resumeStep?: number;
}

/** Appends records to <dir>/metrics.jsonl and TensorBoard events in <dir>/tensorboard/. */
export class MetricsWriter {
  readonly jsonlPath: string;
  /** The step of the last record in the file when it was opened (0: none). */
  readonly lastStep: number = 0;
  private fd: number | null;
  private tb: TensorBoardWriter | null;

  constructor(dir: string, o: MetricsWriterOptions = {}) {
    this.jsonlPath = join(dir, 'metrics.jsonl');
    if (o.resumeStep !== undefined && existsSync(this.jsonlPath)) {
      const kept = readRecords(this.jsonlPath).filter((r) => r.step <= o.resumeStep!);
      this.lastStep = kept.reduce((m, r) => Math.max(m, r.step), 0);
      writeFileAtomic(this.jsonlPath, kept.map((r) => JSON.stringify(r) + '\n').join(''));
    } else if (o.resumeStep === undefined && existsSync(this.jsonlPath)) {
      writeFileAtomic(this.jsonlPath, '');
    }
    this.fd = openSync(this.jsonlPath, 'a');
    try {
      this.tb = o.tensorboard === false ? null : new TensorBoardWriter(join(dir, 'tensorboard'), { resumeStep: o.resumeStep ?? 0 });
    } catch (e) { // (a tensorboard/ that cannot be made — a file of that name — kept metrics.jsonl open, once per attempt)
      closeSync(this.fd);
      this.fd = null;
      throw e;
    }
  }

  write(r: LogRecord): void {
    if (this.fd === null) throw new Error('MetricsWriter: already closed');
    const line = Buffer.from(JSON.stringify(r) + '\n');
    let off = 0;
    while (off < line.length) off += writeSync(this.fd, line, off, line.length - off);
    if (this.tb) {
      const scalars: Record<string, number | null> = {
        'train/loss': r.loss, 'train/grad_norm': r.grad_norm, 'train/lr': r.lr, 'perf/ms_per_step': r.ms_per_step,
        'perf/tokens_per_s': r.tokens_per_s, 'perf/images_per_s': r.images_per_s, 'perf/utilisation': r.utilisation,
        'perf/peak_mem_bytes': r.peak_mem_bytes, 'train/skipped': r.skipped,
      };
      if (r.accuracy !== undefined) scalars['train/accuracy'] = r.accuracy;
      if (r.host_ms_per_step !== undefined) scalars['perf/host_ms_per_step'] = r.host_ms_per_step;
      for (const [k, v] of Object.entries(r)) if (k.startsWith('eval_')) scalars[`eval/${k.slice(5)}`] = v as number;
      this.tb.scalars(r.step, scalars);
    }
  }

  close(): void {
    if (this.fd !== null) { fsyncSync(this.fd); closeSync(this.fd); this.fd = null; }
    this.tb?.close();
    this.tb = null;
  }
}

export function readRecords(path: string): LogRecord[] {
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.trim()).flatMap((l) => {
    try { return [JSON.parse(l) as LogRecord]; } catch { return []; } // a torn last line of a killed run
  });
}
