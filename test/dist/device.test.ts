// One GPU per local rank (localGpu) and the gradient-sync switches (OWLET_DIST_OVERLAP, OWLET_DIST_BUCKET_MB).
import test from 'ava';
import { gradientSyncSettings, readDistEnv } from '../../lib/dist/env.ts';
import { localGpu, visibleGpus } from '../../lib/dist/device.ts';
import { DistributedError } from '../../lib/tensor/errors.ts';

const rank = (r: number, local: number, localWorld: number, world: number, extra: Record<string, string> = {}) => ({
  RANK: String(r), LOCAL_RANK: String(local), LOCAL_WORLD_SIZE: String(localWorld), WORLD_SIZE: String(world),
  MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500', ...extra,
});

test('CUDA_VISIBLE_DEVICES: one GPU per task is cuda:0; too few GPUs for the local ranks is a clear error', (t) => {
  t.is(visibleGpus({}), undefined);
  t.is(visibleGpus({ CUDA_VISIBLE_DEVICES: '' }), 0);
  t.is(visibleGpus({ CUDA_VISIBLE_DEVICES: 'GPU-aa,GPU-bb' }), 2);
  const gpuOf = (env: Record<string, string>) => localGpu(readDistEnv(env)!, env);
  t.is(gpuOf(rank(5, 5, 8, 8, { CUDA_VISIBLE_DEVICES: '5' })), 0);
  t.is(gpuOf(rank(1, 1, 2, 2, { CUDA_VISIBLE_DEVICES: '4,5' })), 1);
  t.is(gpuOf(rank(11, 3, 8, 16)), 3);
  t.throws(() => gpuOf(rank(2, 2, 4, 4, { CUDA_VISIBLE_DEVICES: '0,1' })), {
    instanceOf: DistributedError, message: /rank 2 has LOCAL_RANK 2, but CUDA_VISIBLE_DEVICES leaves 2 GPU\(s\) .* at most 2 ranks per node/,
  });
});

test('OWLET_DIST_OVERLAP turns the overlapped all-reduce off; OWLET_DIST_BUCKET_MB sets the bucket size', (t) => {
  t.deepEqual(gradientSyncSettings({}), { overlap: true, bucketBytes: undefined });
  t.false(gradientSyncSettings({ OWLET_DIST_OVERLAP: '0' }).overlap);
  t.false(gradientSyncSettings({ OWLET_DIST_OVERLAP: 'off' }).overlap);
  t.true(gradientSyncSettings({ OWLET_DIST_OVERLAP: '1' }).overlap);
  t.is(gradientSyncSettings({ OWLET_DIST_BUCKET_MB: '0.5' }).bucketBytes, 512 * 1024);
  t.throws(() => gradientSyncSettings({ OWLET_DIST_OVERLAP: 'maybe' }), { instanceOf: DistributedError });
  t.throws(() => gradientSyncSettings({ OWLET_DIST_BUCKET_MB: '-1' }), { instanceOf: DistributedError, message: /not a positive number/ });
});

test('WORLD_SIZE=1 with a RANK other than 0 is a misconfigured launch, refused', (t) => {
  t.is(readDistEnv({ WORLD_SIZE: '1', RANK: '0' }), null);
  t.is(readDistEnv({ WORLD_SIZE: '1' }), null);
  t.is(readDistEnv({}), null);
  t.throws(() => readDistEnv({ WORLD_SIZE: '1', RANK: '1' }), { message: /WORLD_SIZE=1 but RANK=1: a world of one process has only rank 0/ });
  t.is(readDistEnv({ RANK: '3' }), null, '(RANK alone, without WORLD_SIZE, may be another tool\'s: not a launch)');
});
