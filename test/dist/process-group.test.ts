// The gloo process group between real processes over loopback: bucketed all-reduce, mean, numbers, broadcast of
// mixed dtypes, barrier, gather and share; and its failures as typed errors within their timeouts: a rank that joins a
// collective too late, a peer that exits, a rank that never arrives at the rendezvous.
import test from 'ava';
import { runWorkerRanks } from './helpers/worker-ranks.ts';
import { distTimeouts } from '../../lib/dist/env.ts';
import { DistributedError } from '../../lib/tensor/errors.ts';

interface Result { ok?: Record<string, unknown>; error?: { name: string; code: string; op: string; message: string }; ms: number; opMs?: number | null }

/** Starts `world` ranks of the worker (rank 0 hosts the store, as under torchrun or srun) and collects their lines. */
async function ranks(scenario: string, world: number, env: Record<string, string> = {}, only?: number[]): Promise<Result[]> {
  return runWorkerRanks<Result>({
    worker: 'test/dist/helpers/pg-worker.ts', scenario, ranks: only ?? Array.from({ length: world }, (_, r) => r), timeoutMs: 30_000,
    silent: { ms: -1 }, // (a rank that exits on purpose)
    env: (rank, port) => ({ RANK: String(rank), WORLD_SIZE: String(world), LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: String(world),
      MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), OMP_NUM_THREADS: '1', ...env }),
  });
}

test.serial('collectives: bucketed sums, mean, doubles, broadcast of f32 and i32, gather and share', async (t) => {
  const rs = await ranks('collectives', 3, { TEST_BUCKET_BYTES: '64' });
  for (const [r, res] of rs.entries()) {
    t.falsy(res.error, JSON.stringify(res.error));
    const o = res.ok!;
    t.is(o.rank, r);
    // sum over ranks 0..2 of (r+1)·x = 6x; of r+0.5 = 4.5; of -r = -3
    t.deepEqual(o.sums, [[6, 12, 18], [4.5, 4.5, 4.5, 4.5, 4.5], Array.from({ length: 101 }, (_, i) => 6 * i), Array(7).fill(-3)]);
    t.deepEqual(o.mean, [1, 10]);
    t.deepEqual(o.numbers, [3.75, 6e-12, 3 * 2 ** 40 + 3], 'numbers are summed in double precision');
    t.deepEqual(o.bcast, [[8, 9], [100, -1]], 'rank 1 was the root');
    t.is(o.shared, 'hello from 0');
    t.deepEqual(o.gathered, r === 0 ? ['from 0', 'from 1', 'from 2'] : null);
  }
});

test.serial('gradients all-reduced overlapped with the backward equal the all-reduce after it, bit for bit (2 ranks)', async (t) => {
  const rs = await ranks('overlap', 2, { TEST_BUCKET_BYTES: '128' });
  for (const res of rs) t.falsy(res.error, JSON.stringify(res.error));
  const [r0, r1] = rs.map((r) => r.ok as { sequential: number[][]; overlapped: number[][]; had: boolean[]; early: number; buckets: number[][] });
  t.deepEqual(r0.buckets, [[4, 3], [2], [1], [0]], 'reverse registration order; the first bucket holds up to the bucket size');
  for (const r of [r0, r1]) t.deepEqual(r.overlapped, r.sequential);
  t.deepEqual(r0.overlapped, r1.overlapped, 'every rank ends with the same mean');
  t.true(r0.sequential[0].some((v) => v !== 0), 'the parameter used on rank 0 only has its half of rank 0\'s gradient');
  t.deepEqual(r0.had, [true, true, true, true, true]);
  t.deepEqual(r1.had, [false, true, true, true, true], 'rank 1 reduced zeros for the parameter it did not use');
  t.is(r0.early, 4, 'rank 0 started every bucket during the backward');
  t.is(r1.early, 3, 'rank 1 started the last bucket (its unused parameter) only when the backward was over');
});

test.serial('a collective that a rank joins too late fails with a DistributedError naming the op and the rank', async (t) => {
  const [r0] = await ranks('late-collective', 2, { OWLET_DIST_TIMEOUT: '1' });
  t.is(r0.error?.name, 'DistributedError');
  t.is(r0.error?.code, 'OWLET_DIST');
  t.is(r0.error?.op, 'allreduce');
  t.regex(r0.error!.message, /^allreduce on rank 0 of 2: bucket 1\/1 \(4 bytes\) failed: .*(Timed out|timeout).*another rank did not join/);
  t.true(r0.opMs! >= 900 && r0.opMs! < 2000, `failed after ${r0.opMs} ms: at its 1 s timeout, before the late rank came`);
});

test.serial('a peer that exits makes the next collective fail at once, not hang', async (t) => {
  const [r0, r1] = await ranks('peer-exits', 2, { OWLET_DIST_TIMEOUT: '20' });
  t.is(r1.ok, undefined, 'rank 1 exited without a result line');
  t.is(r0.error?.name, 'DistributedError');
  t.regex(r0.error!.message, /^allreduce on rank 0 of 2: of 1 numbers failed: .*(closed|reset).*another rank exited or crashed/);
  t.true(r0.opMs! < 2000, `failed after ${r0.opMs} ms (its timeout is 20 s)`);
});

test.serial('a rendezvous that a rank never reaches times out naming the missing ranks', async (t) => {
  const [r0] = await ranks('collectives', 3, { OWLET_RENDEZVOUS_TIMEOUT: '1.5' }, [0]);
  t.is(r0.error?.name, 'DistributedError');
  t.is(r0.error?.op, 'rendezvous');
  t.regex(r0.error!.message, /^rendezvous on rank 0 of 3: timed out after 1\.5 s: ranks 1, 2 of 3 did not arrive \(store 127\.0\.0\.1:\d+\)$/);
  t.true(r0.ms < 6000);
  const [r2] = await ranks('collectives', 3, { OWLET_RENDEZVOUS_TIMEOUT: '1' }, [2]);
  t.regex(r2.error!.message, /^rendezvous on rank 2 of 3: cannot reach the rendezvous store at 127\.0\.0\.1:\d+ within 1 s .*is not running$/);
});

test('timeouts too large for the native side\'s nanosecond clock are refused, not overflowed into an instant timeout', (t) => {
  t.deepEqual(distTimeouts({ OWLET_RENDEZVOUS_TIMEOUT: '1e6', OWLET_DIST_TIMEOUT: '2.5' }), { rendezvousMs: 1e9, opMs: 2500 });
  for (const v of ['1e10', '9.3e9', '0', '-1', 'abc']) {
    t.throws(() => distTimeouts({ OWLET_DIST_TIMEOUT: v }), { instanceOf: DistributedError }, v);
  }
});
