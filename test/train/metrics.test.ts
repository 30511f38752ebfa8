import test from 'ava';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import sharp from 'sharp';
import { IntervalMeter, formatRecord, type LogRecord, type StepStats } from '../../lib/train/metrics.ts';
import { writePlots } from '../../lib/train/plots.ts';
import { Progress } from '../../lib/train/progress.ts';

const step = (s: Partial<StepStats> & { step: number }): StepStats => ({ loss: 1, gradNorm: 1, lr: 1e-3, ms: 500, tokens: 1000,
  images: 4, counted: 100, skipped: false, ...s });

test('a logging record averages the applied steps and rates over the interval', (t) => {
  const m = new IntervalMeter(1e12);
  m.add(step({ step: 1, loss: 2, gradNorm: 4, correct: 50, flops: 2e11 }));
  m.add(step({ step: 2, loss: NaN, gradNorm: NaN, skipped: true, correct: 0, flops: 2e11 }));
  m.add(step({ step: 3, loss: 1, gradNorm: 2, lr: 5e-4, correct: 70, flops: 2e11 }));
  const r = m.flush(3 * 2 ** 30, { loss: 1.75 })!;
  t.is(r.step, 3);
  t.is(r.loss, 1.5);
  t.is(r.grad_norm, 3);
  t.is(r.lr, 5e-4);
  t.is(r.ms_per_step, 500);
  t.is(r.tokens_per_s, 2000);
  t.is(r.images_per_s, 8);
  t.is(r.utilisation, 0.4); // 6e11 FLOPs in 1.5 s on a 1e12 FLOP/s device
  t.is(r.accuracy, 0.6);
  t.is(r.skipped, 1);
  t.is(r.eval_loss, 1.75);
  t.is(m.flush(null), null, 'empty interval');
  t.is(formatRecord(r, 100), 'step 3/100 | loss 1.5000 | grad 3.000 | lr 5.00e-4 | 500 ms/step | 2000 tok/s | 8.0 img/s | util 40.0% | peak 3.00 GiB | acc 60.0% | skipped 1 | eval_loss 1.7500');
  const noFlops = new IntervalMeter(1e12);
  noFlops.add(step({ step: 1 }));
  const r2 = noFlops.flush(null)!;
  t.is(r2.utilisation, null);
  t.is(r2.accuracy, undefined);
  t.is(formatRecord(r2), 'step 1 | loss 1.0000 | grad 1.000 | lr 1.00e-3 | 500 ms/step | 2000 tok/s | 8.0 img/s');
  t.is(r2.host_ms_per_step, undefined, 'no host time: a step did not report it');
  // the host's own time per step, when every step of the interval reports it (StepStats.queueMs)
  const host = new IntervalMeter();
  host.add(step({ step: 1, queueMs: 300 }));
  host.add(step({ step: 2, queueMs: 340 }));
  const r3 = host.flush(null)!;
  t.is(r3.host_ms_per_step, 320);
  t.is(formatRecord(r3), 'step 2 | loss 1.0000 | grad 1.000 | lr 1.00e-3 | 500 ms/step (host 320) | 2000 tok/s | 8.0 img/s');
  const partial = new IntervalMeter();
  partial.add(step({ step: 1, queueMs: 300 }));
  partial.add(step({ step: 2 }));
  t.is(partial.flush(null)!.host_ms_per_step, undefined);
});

class Sink extends Writable {
  text = '';
  constructor(readonly isTTY: boolean) { super(); }
  columns = 120;
  _write(chunk: Buffer, _enc: string, cb: () => void) { this.text += chunk.toString(); cb(); }
  // readline's cursor helpers call these on a TTY stream
  cursorTo(_x: number, _y?: number, cb?: () => void) { cb?.(); return true; }
  moveCursor(_dx: number, _dy: number, cb?: () => void) { cb?.(); return true; }
  clearLine(_d: number, cb?: () => void) { cb?.(); return true; }
  clearScreenDown(cb?: () => void) { cb?.(); return true; }
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('progress bar in a log file (non-TTY): periodic status lines with an ETA; log lines go straight out', async (t) => {
  const bar = new Sink(false), logs = new Sink(false);
  const p = new Progress({ total: 10, start: 2, label: 'stage2', stream: bar, logStream: logs, nonTtyIntervalMs: 30 });
  for (let v = 3; v <= 6; v++) { p.update(v, `loss ${(1 / v).toFixed(3)}`); await sleep(15); }
  p.log('step 6/10 | loss 0.1667');
  await sleep(40);
  p.stop();
  t.regex(bar.text, /stage2 \[[^\]]+\] \d+% \| \d+\/10 \| \d+s elapsed \| ETA \d+s \| loss 0\.\d{3}/);
  t.true(bar.text.includes('6/10'));
  t.notRegex(bar.text, /\x1b\[/, 'no cursor control sequences in a log file');
  t.is(logs.text, 'step 6/10 | loss 0.1667\n');
});

test('progress bar on a terminal: log lines are printed through the bar', async (t) => {
  const term = new Sink(true);
  const p = new Progress({ total: 4, stream: term, logStream: term });
  p.update(1);
  p.log('hello from the trainer');
  p.update(4);
  p.stop();
  t.true(term.text.includes('hello from the trainer\n'));
  t.true(term.text.includes('4/4'));
});

test('loss and accuracy plots are written as SVG and PNG', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'owlet-plots-'));
  const records = Array.from({ length: 30 }, (_, i) => ({ step: (i + 1) * 10, loss: 3 / (i + 1), accuracy: 1 - 1 / (i + 2),
    ...(i % 10 === 9 ? { eval_loss: 3.2 / (i + 1) } : {}) })) as unknown as LogRecord[];
  const files = await writePlots(records, dir);
  t.deepEqual(files.map((f) => f.slice(dir.length + 1)), ['loss.svg', 'loss.png', 'accuracy.svg', 'accuracy.png']);
  const svg = readFileSync(join(dir, 'loss.svg'), 'utf8');
  t.true(svg.startsWith('<svg'));
  t.true(svg.includes('Loss') && svg.includes('eval') && svg.includes('train'));
  t.regex(svg, /<path[^>]+d="M/);
  const png = readFileSync(join(dir, 'loss.png'));
  t.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const meta = await sharp(png).metadata();
  t.true(meta.width! > 600 && meta.height! > 300, `${meta.width}×${meta.height}`);
  const none = await writePlots([{ step: 1, loss: null } as unknown as LogRecord], join(dir, 'empty'));
  t.deepEqual(none, []);
});
