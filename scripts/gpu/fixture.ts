// The owl-tiny parity fixture through the CUDA backend (run on the GPU machine): logits, loss and every gradient of
// stage 1 and stage 2 (with the PEFT adapter) against the official values, with f32 weights (the fixture's own
// tolerance) and with bf16 weights (reported; bf16 keeps 8 significant bits, so ~1e-2 is expected). Then greedy
// generation (the KV-cache path, f32) on the device against the CPU backend, step by step.
// Usage: node fixture.mjs <owl-tiny dir> [device]
import { join } from 'node:path';
import type { Tokenizer } from '../../lib/data/index.ts';
import { generateIds } from '../../lib/generate/index.ts';
import { loadModel, loadBatch, io } from '../../lib/model/index.ts';
import { backward, scope, tensor, type Tensor } from '../../lib/tensor/index.ts';
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

// owl-tiny has a 512-id vocabulary and no tokenizer of its own: prompts are encoded one id per character (the same
// ids on both backends, which is all the comparison needs).
const charTokenizer = { bos: 1, eos: 2, pad: 0, encode: (s: string) => Array.from(s, (ch) => 3 + (ch.charCodeAt(0) % 500)) } as unknown as Tokenizer;

function generation(dev: string): { ids: number[]; steps: Float32Array[] } {
  const m = loadModel(FX, { device: dev, dtype: 'f32' });
  const px = new Float32Array(3 * 224 * 224);
  for (let i = 0; i < px.length; i++) px[i] = Math.sin(i * 0.37) * 0.8;
  const img = tensor(px, [3, 224, 224], { device: dev });
  const steps: Float32Array[] = [];
  try {
    const ids = generateIds(m, charTokenizer, [{ prompt: 'Human: <image>\nHuman: what is it?\nAI: ', images: [img] }],
      { greedy: true, maxNewTokens: 12, onLogits: (_, rows) => steps.push(Float32Array.from(rows[0])) })[0];
    return { ids, steps };
  } finally {
    img.dispose();
    for (const t of m.params.values()) t.dispose();
  }
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
try {
  const t0 = performance.now();
  const ref = generation('cpu'), got = generation(device);
  let worst = 0;
  got.steps.forEach((row, s) => { worst = Math.max(worst, relMaxError(row, ref.steps[s], TOL.fixture.floor)); });
  const same = got.ids.join() === ref.ids.join() && got.steps.length === ref.steps.length;
  const ok = same && worst < TOL.fixture.rel;
  if (!ok) failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'} owl-tiny greedy generation f32 on ${device} against the CPU: ${got.ids.length} tokens ` +
    `${same ? 'the same' : `differ (${got.ids.join(' ')} vs ${ref.ids.join(' ')})`}, each step's logits within ${worst.toExponential(2)} ` +
    `(< ${TOL.fixture.rel}) ${(performance.now() - t0).toFixed(0)} ms`);
} catch (e) {
  failed++;
  console.log(`FAIL owl-tiny generation on ${device}: ${(e as Error).message}`);
}
process.exitCode = failed ? 1 : 0;
