// lib/op-profile.ts's 'device' mode: each native call bracketed by two timeline marks, turned into per-op device time
// and the device's idle gaps. On the CPU a mark is the host time of the call, so an op's "device" time is its call and
// a pause of the host between two ops must show up as a gap before the second.
import test from 'ava';

process.env.OWLET_PROFILE_OPS = '1'; // read when the addon is wrapped, i.e. at its first use below
const { cpu } = await import('../lib/native.ts');
const { deviceTimeline, profiled, resetOpProfile, setOpProfiling } = await import('../lib/op-profile.ts');
const { matmul, tensor } = await import('../lib/tensor/index.ts');

function pause(ms: number) {
  const t0 = performance.now();
  while (performance.now() - t0 < ms) { /* the host busy elsewhere: the device idles */ }
}

test('device timeline: per-op time, the gap a host pause leaves, span = busy + idle', (t) => {
  const be = cpu();
  const a = tensor(new Float32Array(96 * 96).fill(0.5), [96, 96]), b = tensor(new Float32Array(96 * 96).fill(0.25), [96, 96]);
  resetOpProfile();
  setOpProfiling('device');
  try {
    matmul(a, b).dispose();
    pause(20);
    matmul(a, b).dispose();
  } finally {
    setOpProfiling(null);
  }
  const tl = deviceTimeline(be.timelineRead(), be.backend);
  t.is(tl.calls, tl.ops.reduce((s, o) => s + o.calls, 0));
  const mm = tl.ops.find((o) => o.op === 'matmul [96,96] [96,96]');
  t.truthy(mm, JSON.stringify(tl.ops.map((o) => o.op)));
  t.is(mm!.calls, 2);
  t.true(mm!.ms > 0);
  t.true(tl.gaps[0].ms >= 19, `the 20 ms pause is the longest gap: ${JSON.stringify(tl.gaps.slice(0, 3))}`);
  t.true(tl.gaps[0].op.includes('matmul'));
  t.true(tl.idle_ms >= tl.gaps[0].ms);
  t.true(Math.abs(tl.span_ms - (tl.busy_ms + tl.idle_ms)) < 1e-6);
});

test('device timeline: marks that do not match the bracketed calls are an error, not wrong numbers', (t) => {
  const be = cpu();
  resetOpProfile();
  setOpProfiling('device');
  try {
    tensor(new Float32Array(4), [4]).dispose();
  } finally {
    setOpProfiling(null);
  }
  be.timelineMark();
  t.throws(() => deviceTimeline(be.timelineRead(), be.backend), { message: /marks read for .* bracketed calls/ });
  t.is(be.timelineRead().length, 0, 'a read forgets the marks');
});

test("device timeline: another addon's calls (a CPU op in a GPU step) stay on that addon's timeline", (t) => {
  const be = cpu();
  const a = tensor(new Float32Array(16).fill(1), [4, 4]);
  const otherMarks: number[] = [];
  const otherOp = profiled('otherOp', () => 1, () => {}, () => { otherMarks.push(performance.now()); }, 'other');
  resetOpProfile();
  setOpProfiling('device');
  try {
    matmul(a, a).dispose();
    otherOp();
    matmul(a, a).dispose();
  } finally {
    setOpProfiling(null);
  }
  const mine = deviceTimeline(be.timelineRead(), be.backend), other = deviceTimeline(Float64Array.from(otherMarks), 'other');
  t.is(mine.calls, 2);
  t.deepEqual(other.ops.map((o) => o.op), ['otherOp']);
  a.dispose();
});
