// run.device → a concrete device: cpu, auto (a GPU when the CUDA addon loads and sees one), cuda / cuda:N, and a
// launcher's LOCAL_RANK; a CUDA request that cannot be met fails with a DeviceError naming why.
import test from 'ava';
import { DeviceError } from '../../lib/tensor/errors.ts';
import { probeCuda, resolveDevice, type CudaProbe } from '../../lib/train/device.ts';
import { buildModel } from '../../lib/train/owl-components.ts';
import { modelSizes } from '../../lib/train/config.ts';
import { owlTinyDir, tinyConfig } from '../helpers/owl-steps.ts';

const gpus = (n: number) => (): CudaProbe => ({ devices: n });
const none = (why: string) => (): CudaProbe => ({ devices: 0, why });
const launched = (localRank: number, worldSize = 4) => ({ WORLD_SIZE: String(worldSize), RANK: String(localRank), LOCAL_RANK: String(localRank),
  LOCAL_WORLD_SIZE: String(worldSize), MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500' });

test('cpu is cpu without asking the CUDA addon; auto takes a GPU only when there is one', (t) => {
  t.is(resolveDevice('cpu', { probe: () => { throw new Error('not called'); } }), 'cpu');
  t.is(resolveDevice('auto', { probe: none('the CUDA backend is not built'), env: {} }), 'cpu');
  t.is(resolveDevice('auto', { probe: gpus(2), env: {} }), 'cuda:0');
  t.is(resolveDevice('cuda', { probe: gpus(1), env: {} }), 'cuda:0');
  t.is(resolveDevice('cuda:1', { probe: gpus(2), env: {} }), 'cuda:1');
});

test('under a launcher, cuda and auto take the GPU of LOCAL_RANK; an explicit cuda:N only with one rank per node', (t) => {
  t.is(resolveDevice('cuda', { probe: gpus(4), env: launched(3) }), 'cuda:3');
  t.is(resolveDevice('auto', { probe: gpus(4), env: launched(2) }), 'cuda:2');
  t.is(resolveDevice('auto', { probe: none('no GPU'), env: launched(2) }), 'cpu');
  t.is(resolveDevice('cuda:1', { probe: gpus(4), env: launched(0, 1) }), 'cuda:1');
  // an explicit cuda:N would be shared by the node's ranks
  t.throws(() => resolveDevice('cuda:0', { probe: gpus(4), env: launched(2) }),
    { instanceOf: DeviceError, message: /names one GPU for all 4 ranks of this node; use cuda or auto/ });
  // CUDA_VISIBLE_DEVICES leaving fewer GPUs than local ranks
  t.throws(() => resolveDevice('cuda', { probe: gpus(2), env: { ...launched(3), CUDA_VISIBLE_DEVICES: '0,1' } }),
    { instanceOf: DeviceError, message: /LOCAL_RANK 3, but CUDA_VISIBLE_DEVICES leaves 2 GPU/ });
  t.throws(() => resolveDevice('cuda', { probe: gpus(2), env: launched(3) }),
    { instanceOf: DeviceError, message: /run\.device 'cuda': this rank's LOCAL_RANK is 3 but 2 CUDA device\(s\) are visible/ });
  t.throws(() => resolveDevice('cuda:2', { probe: gpus(2), env: {} }), { instanceOf: DeviceError, message: /cuda:2 was asked for but 2 CUDA device/ });
  // a scheduler that binds one GPU per rank (CUDA_VISIBLE_DEVICES=<its id>): that GPU is this process's cuda:0
  t.is(resolveDevice('cuda', { probe: gpus(1), env: { ...launched(3), CUDA_VISIBLE_DEVICES: '3' } }), 'cuda:0');
  t.throws(() => resolveDevice('cuda', { probe: gpus(1), env: launched(3) }), { instanceOf: DeviceError });
});

test('cuda without a usable CUDA backend is a DeviceError that names why', (t) => {
  for (const why of ['the CUDA backend is not built: no owlet_cuda.node in build/Cuda/owlet_cuda.node', 'deviceCount: no usable CUDA device (cudaErrorNoDevice)']) {
    const e = t.throws(() => resolveDevice('cuda', { probe: none(why), env: {} }), { instanceOf: DeviceError });
    t.true(e!.message.startsWith("run.device 'cuda': the CUDA backend cannot be used here: "));
    t.true(e!.message.includes(why));
  }
  t.throws(() => resolveDevice('tpu', { probe: gpus(1) }), { instanceOf: DeviceError, message: /must be auto, cpu, cuda or cuda:N/ });
});

test('on this machine: the probe never throws; auto → cpu and cuda fails clearly when it sees no GPU', (t) => {
  const p = probeCuda();
  t.true(Number.isInteger(p.devices) && p.devices >= 0);
  if (p.devices > 0) {
    t.is(resolveDevice('auto', { env: {} }), 'cuda:0');
    return;
  }
  t.is(typeof p.why, 'string');
  t.is(resolveDevice('auto', { env: {} }), 'cpu');
  t.throws(() => resolveDevice('cuda', { env: {} }), { instanceOf: DeviceError, message: /the CUDA backend cannot be used here/ });
  const fx = owlTinyDir();
  if (!fx) return;
  // buildModel refuses before reading any weight (no crash, no tensors left behind).
  const c = tinyConfig(fx, 1, 'cuda', 'bf16');
  t.throws(() => buildModel(c, modelSizes(c), { env: {} }), { instanceOf: DeviceError });
});
