// The owl-tiny parity fixture through the CUDA backend (run on the GPU machine): logits, loss and every gradient of
// stage 1 and stage 2 (with the PEFT adapter) against the official values, with f32 weights (the fixture's own
// tolerance) and with bf16 weights (reported; bf16 keeps 8 significant bits, so ~1e-2 is expected).
// Usage: node fixture.mjs <owl-tiny dir> [device]
import { join } from 'node:path';
import { loadModel, loadBatch, io } from '../../lib/model/index.ts';
import { backward, scope, type Tensor } from '../../lib/tensor/index.ts';
import { TOL, relMaxError } from '../../test/helpers/tolerances.ts';

const FX = process.argv[2];
const device = process.argv[3] ?? 'cuda';

function run(stage: 1 | 2, dtype: 'f32' | 'bf16'): { worst: number; worstKey: string; n: number; ms: number } {
  const m = loadModel(FX, { adapterDir: stage === 2 ? FX : null, device, dtype });
  m.setTrainable(stage === 1 ? ['vision', 'queries', 'abstractor'] : ['queries', 'abstractor', 'lora']);
  const want = new Map<string, Tensor>();
  for (const f of stage === 1 ? ['forward.safetensors', 'grads_stage1.safetensors'] : ['forward_lora.safetensors', 'grads_stage2.safetensors']) {
    for (const [k, t] of io.loadSafetensors(join(FX, f))) want.set(k, t);
  }
  let worst = 0, worstKey = '', n = 0;
  const t0 = performance.now();
  scope(() => {
    const batch = loadBatch(join(FX, 'batch.safetensors'), device);
    const { logits, loss } = m.forward(batch);
    backward(loss);
    const got = new Map<string, Tensor>([['logits', logits], ['loss', loss]]);
    for (const [k, p] of m.trainable()) if (p.grad) got.set(k, p.grad);
    for (const [k, w] of want) {
      const g = got.get(k);
      const e = g ? relMaxError(g.toFloat32(), w.toFloat32(), TOL.fixture.floor) : Infinity;
      n++;
      if (e > worst) { worst = e; worstKey = k; }
    }
  });
  const ms = performance.now() - t0;
  for (const t of [...want.values(), ...m.params.values()]) t.dispose();
  return { worst, worstKey, n, ms };
}

let failed = 0;
for (const dtype of ['f32', 'bf16'] as const) {
  for (const stage of [1, 2] as const) {
    try {
      const r = run(stage, dtype);
      const ok = dtype === 'bf16' || r.worst < TOL.fixture.rel;
      if (!ok) failed++;
      console.log(`${ok ? 'PASS' : 'FAIL'} owl-tiny stage ${stage} ${dtype} on ${device}: ${r.n} tensors, worst relative max error ` +
        `${r.worst.toExponential(2)} (${r.worstKey})${dtype === 'f32' ? ` < ${TOL.fixture.rel}` : ' (reported)'} ${r.ms.toFixed(0)} ms`);
    } catch (e) {
      failed++;
      console.log(`FAIL owl-tiny stage ${stage} ${dtype} on ${device}: ${(e as Error).message}`);
    }
  }
}
process.exitCode = failed ? 1 : 0;
