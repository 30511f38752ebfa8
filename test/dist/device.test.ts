// One GPU per local rank (rankDevice) and the gradient-sync switches (OWLET_DIST_OVERLAP, OWLET_DIST_BUCKET_MB).
import test from 'ava';
import { gradientSyncSettings } from '../../lib/dist/env.ts';
import { rankDevice, visibleGpus } from '../../lib/dist/device.ts';
import { DistributedError } from '../../lib/tensor/errors.ts';

const rank = (r: number, local: number, localWorld: number, world: number, extra: Record<string, string> = {}) => ({
  RANK: String(r), LOCAL_RANK: String(local), LOCAL_WORLD_SIZE: String(localWorld), WORLD_SIZE: String(world),
  MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500', ...extra,
});
const gpu = () => true, noGpu = () => false;

test('alone: the device asked for; auto is cuda where the CUDA backend loads, else cpu', (t) => {
  t.is(rankDevice('cpu', { env: {} }), 'cpu');
  t.is(rankDevice('cuda', { env: {} }), 'cuda');
  t.is(rankDevice('cuda:1', { env: {} }), 'cuda:1');
  t.is(rankDevice('auto', { env: {}, cudaUsable: gpu }), 'cuda');
  t.is(rankDevice('auto', { env: {}, cudaUsable: noGpu }), 'cpu');
  t.throws(() => rankDevice('gpu', { env: {} }), { instanceOf: DistributedError, message: /must be auto, cpu, cuda or cuda:N/ });
});

test('under a launcher: cuda and auto become cuda:LOCAL_RANK, cpu stays cpu', (t) => {
  t.is(rankDevice('cuda', { env: rank(11, 3, 8, 16) }), 'cuda:3');
  t.is(rankDevice('auto', { env: rank(11, 3, 8, 16), cudaUsable: gpu }), 'cuda:3');
  t.is(rankDevice('auto', { env: rank(11, 3, 8, 16), cudaUsable: noGpu }), 'cpu');
  t.is(rankDevice('cpu', { env: rank(11, 3, 8, 16) }), 'cpu');
  // LOCAL_RANK missing (some srun scripts): rank modulo the local world size.
  const { LOCAL_RANK: _, ...noLocal } = rank(13, 5, 8, 16);
  t.is(rankDevice('cuda', { env: noLocal }), 'cuda:5');
});

test('CUDA_VISIBLE_DEVICES: one GPU per task is cuda:0; too few GPUs for the local ranks is a clear error', (t) => {
  t.is(visibleGpus({}), undefined);
  t.is(visibleGpus({ CUDA_VISIBLE_DEVICES: '' }), 0);
  t.is(visibleGpus({ CUDA_VISIBLE_DEVICES: 'GPU-aa,GPU-bb' }), 2);
  t.is(rankDevice('cuda', { env: rank(5, 5, 8, 8, { CUDA_VISIBLE_DEVICES: '5' }) }), 'cuda:0');
  t.is(rankDevice('cuda', { env: rank(1, 1, 2, 2, { CUDA_VISIBLE_DEVICES: '4,5' }) }), 'cuda:1');
  t.throws(() => rankDevice('cuda', { env: rank(2, 2, 4, 4, { CUDA_VISIBLE_DEVICES: '0,1' }) }), {
    instanceOf: DistributedError, message: /rank 2 has LOCAL_RANK 2, but CUDA_VISIBLE_DEVICES leaves 2 GPU\(s\) .* at most 2 ranks per node/,
  });
});

test('an explicit cuda:N is kept with one rank per node and refused when the node\'s ranks would share it', (t) => {
  t.is(rankDevice('cuda:2', { env: rank(3, 0, 1, 4) }), 'cuda:2');
  t.throws(() => rankDevice('cuda:0', { env: rank(1, 1, 8, 8) }), {
    instanceOf: DistributedError, message: /cuda:0 names one GPU for all 8 ranks of this node; use cuda or auto/,
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
