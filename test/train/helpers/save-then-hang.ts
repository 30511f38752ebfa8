// Child process for the kill test: saves a complete checkpoint at step 1, then starts saving step 2 and, once the
// weights file of step 2 is on disk, tells the parent (stdout "MIDWAY") and blocks until it is SIGKILLed.
import { CheckpointManager } from '../../../lib/train/checkpoint.ts';
import { tensor } from '../../../lib/tensor/index.ts';
import { fakeIO } from './fakes.ts';

const root = process.argv[2];
let saving = 1;
const mgr = new CheckpointManager(root, fakeIO, {
  keepLast: 3,
  onSavePoint: (p) => {
    if (saving === 2 && p === 'file:weights.safetensors') {
      process.stdout.write('MIDWAY\n');
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000); // a process stuck mid-write
    }
  },
});
const payload = (step: number, v: number) => ({
  step, stage: 2, config: { note: 'kill test' }, weights: new Map([['w', tensor([v, v + 1, v + 2])]]),
  optimizer: { meta: { step }, tensors: new Map([['m.w', tensor([v / 10, 0, 0])]]) }, rng: { trainer: [1, 2, 3, step] },
  data: { index: step * 10 }, skippedSteps: 0, metrics: { history: [] },
});
await mgr.save(payload(1, 1));
saving = 2;
await mgr.save(payload(2, 5));
process.stdout.write('DONE\n');
