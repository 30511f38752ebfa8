// Child process for the kill-during-training test: trains the fake model with checkpoints every 2 steps and, in the
// middle of writing the step-6 checkpoint, reports "MIDWAY" and blocks until the parent SIGKILLs it.
import { setup } from './run-fixture.ts';

const outDir = process.argv[2];
const { trainer } = setup({
  outDir, totalSteps: 9, checkpointEvery: 2, keepLast: 3,
  onSavePoint: (p) => {
    if (p === 'file:optimizer.safetensors' && trainer.step === 6) {
      process.stdout.write('MIDWAY\n');
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
    }
  },
});
await trainer.run();
process.stdout.write('DONE\n');
