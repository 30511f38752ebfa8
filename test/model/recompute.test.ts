// Activation recomputation per LLM layer (config model.gradient_checkpointing): on the owl-tiny fixture, stage 1 and
// stage 2 (LoRA, with LoRA dropout drawing seeds inside the layers) give the same loss and the same gradient of every
// trainable tensor, bit for bit, with and without it; with it, less memory is held between forward and backward; no
// tensor leaks; and the trainer's model wrapper turns it on from the config.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MplugOwl, STAGE_GROUPS, initLora, initParams, loadBatch, loadModel, parseAdapterConfig, parseOwlConfig, type OwlBatch } from '../../lib/model/index.ts';
import { backward, bytesInUse, cast, clearTape, liveTensors, noGrad, scope, tapeLength } from '../../lib/tensor/index.ts';
import { owlTinyDir, tinyConfig, trainTinySteps } from '../helpers/owl-steps.ts';

const FX = owlTinyDir();
const withFixture = FX ? test.serial : test.skip;
const hex = (a: Float32Array) => Buffer.from(a.buffer).toString('hex');

/** Loss and every trainable gradient (as bytes) of one training-mode forward and backward. */
function step(m: MplugOwl, batch: OwlBatch, recompute: boolean) {
  const rng = m.rngState;
  const r = scope(() => {
    const { loss } = m.forward(batch, { training: true, logits: 'counted', recompute });
    const nodes = tapeLength();
    backward(loss);
    const grads = new Map<string, string>();
    for (const [k, p] of m.trainable()) {
      if (!p.grad) continue;
      grads.set(k, hex(p.grad.toFloat32()));
      p.grad.dispose();
      p.grad = null;
    }
    return { loss: hex(loss.toFloat32()), grads, nodes, rngAfter: m.rngState };
  });
  m.rngState = rng;
  return r;
}

function same(t: import('ava').ExecutionContext, m: MplugOwl, batch: OwlBatch, wantGrads: number) {
  const plain = step(m, batch, false), ck = step(m, batch, true);
  t.is(ck.loss, plain.loss, 'loss');
  t.is(plain.grads.size, wantGrads);
  t.deepEqual([...ck.grads.keys()], [...plain.grads.keys()]);
  for (const [k, g] of plain.grads) t.is(ck.grads.get(k), g, k);
  t.is(ck.rngAfter, plain.rngAfter, 'the same seeds drawn');
  t.true(ck.nodes < plain.nodes, `tape nodes ${ck.nodes} (recompute) vs ${plain.nodes}`);
}

withFixture('stage 1: loss and every vision/query/abstractor gradient identical with recomputation', (t) => {
  const m = loadModel(FX!);
  m.setTrainable(STAGE_GROUPS[1]);
  const batch = loadBatch(join(FX!, 'batch.safetensors'));
  const live = liveTensors();
  same(t, m, batch, m.trainable().size);
  t.is(liveTensors(), live, 'no tensor leaks');
  batch.pixelValues?.dispose();
  for (const p of m.params.values()) p.dispose();
});

withFixture('stage 2 (LoRA with dropout): loss and every query/abstractor/LoRA gradient identical', (t) => {
  const m = loadModel(FX!, { adapterDir: FX! });
  m.adapter = { ...m.adapter!, loraDropout: 0.2 }; // seeds drawn inside every layer must replay
  m.setTrainable(STAGE_GROUPS[2]);
  const batch = loadBatch(join(FX!, 'batch.safetensors'));
  const live = liveTensors();
  same(t, m, batch, m.trainable().size);
  t.is(liveTensors(), live, 'no tensor leaks');
  // The seeds matter: another stream state gives other masks, so other gradients (the comparison can fail).
  const a = step(m, batch, true);
  m.rngState ^= 0x5555;
  const b = step(m, batch, true);
  t.not(b.loss, a.loss);
  batch.pixelValues?.dispose();
  for (const p of m.params.values()) p.dispose();
});

withFixture('stage 2 with LoRA masters in another dtype: the working copies made before each layer get their gradients', (t) => {
  // computeDtype f32 over bf16-stored LoRA matrices: each forward reads them through a cast (a working copy, an
  // outer activation the checkpointed layer closes over), so their gradient must leave the block through the tape.
  const m = loadModel(FX!, { adapterDir: FX! });
  for (const [k, p] of m.params) {
    if (!k.includes('.lora_')) continue;
    const b = cast(p, 'bf16');
    b.name = k;
    p.dispose();
    m.params.set(k, b);
  }
  m.computeDtype = 'f32';
  m.setTrainable(['lora']);
  const batch = loadBatch(join(FX!, 'batch.safetensors'));
  same(t, m, batch, m.trainable().size);
  batch.pixelValues?.dispose();
  for (const p of m.params.values()) p.dispose();
});

withFixture('less memory is held between forward and backward with recomputation (6 layers, stage 2)', (t) => {
  const json = JSON.parse(readFileSync(join(FX!, 'config.json'), 'utf8'));
  json.text_config.num_hidden_layers = 6;
  const c = parseOwlConfig(json);
  const params = initParams(c, { seed: 3 });
  const adapter = parseAdapterConfig({ r: 4, lora_alpha: 8, lora_dropout: 0.1, target_modules: ['q_proj', 'v_proj'] });
  initLora(c, adapter, params, 4);
  const m = new MplugOwl(c, params, adapter);
  m.setTrainable(STAGE_GROUPS[2]);
  const batch = loadBatch(join(FX!, 'batch.safetensors'));
  const held = (recompute: boolean) => scope(() => {
    const before = bytesInUse('cpu'), live = liveTensors();
    const { loss } = m.forward(batch, { training: true, logits: 'counted', recompute });
    const r = { bytes: bytesInUse('cpu') - before, tensors: liveTensors() - live };
    backward(loss);
    for (const p of m.trainable().values()) { p.grad?.dispose(); p.grad = null; }
    return r;
  });
  held(false);
  const live = liveTensors();
  const off = held(false), on = held(true);
  t.log(`held at the loss: ${off.bytes} B in ${off.tensors} tensors without, ${on.bytes} B in ${on.tensors} with recomputation`);
  t.true(on.bytes < 0.75 * off.bytes, `${on.bytes} vs ${off.bytes}`);
  t.true(on.tensors < off.tensors);
  t.is(liveTensors(), live, 'no tensor leaks');
  batch.pixelValues?.dispose();
  for (const p of m.params.values()) p.dispose();
});

withFixture('under noGrad the flag changes nothing; a discarded tape releases what the checkpoints saved', (t) => {
  const m = loadModel(FX!, { adapterDir: FX! });
  m.setTrainable(STAGE_GROUPS[2]);
  const batch = loadBatch(join(FX!, 'batch.safetensors'));
  const live = liveTensors();
  scope(() => {
    const a = noGrad(() => hex(m.forward(batch, { recompute: true }).logits.toFloat32()));
    t.is(tapeLength(), 0);
    t.is(a, noGrad(() => hex(m.forward(batch).logits.toFloat32())));
    m.forward(batch, { training: true, recompute: true });
    t.true(tapeLength() > 0);
    clearTape();
  });
  t.is(liveTensors(), live, 'clearTape releases what the checkpoint nodes saved');
  batch.pixelValues?.dispose();
  for (const p of m.params.values()) p.dispose();
});

withFixture('the trainer model wrapper recomputes when the config asks: the same losses and weights after 2 steps', async (t) => {
  const run = async (recompute: boolean) => {
    const cfg = tinyConfig(FX!, 2, 'cpu', 'f32');
    cfg.model.gradient_checkpointing = recompute;
    const model = loadModel(FX!, { adapterDir: FX! });
    model.adapter = { ...model.adapter!, loraDropout: 0.1 };
    return trainTinySteps(model, cfg, FX!, 2);
  };
  const off = await run(false), on = await run(true);
  t.deepEqual(on.losses, off.losses);
  for (const [k, w] of off.weights) t.is(hex(on.weights.get(k)!), hex(w), k);
});
