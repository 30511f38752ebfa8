// Mixed precision on the CPU (which computes in f32 only; bf16 arithmetic is checked on the GPU by
// scripts/gpu/train-check.ts): the precision plan of the 7B stages, loading straight into that plan, working copies
// read through a cast with fp32 gradients on the masters, the export dtype, and that the placed model trains bit for
// bit like the model built before placement existed.
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ForwardContext, MplugOwl, initParams, loadModel, parseAdapterConfig, parseOwlConfig } from '../../lib/model/index.ts';
import { expectedKeys, expectedLoraKeys } from '../../lib/model/io/keys.ts';
import { backward, cast, liveTensors, mul, ones, scope, tapeLength, tensor, type Tensor } from '../../lib/tensor/index.ts';
import { loadConfig, modelSizes } from '../../lib/train/config.ts';
import { countParams } from '../../lib/train/estimate.ts';
import { OwlTrainable, buildModel, exportOwl, loadPlaced, owlBatch } from '../../lib/train/owl-components.ts';
import { computeDtype, place, precisionPlan } from '../../lib/train/precision.ts';
import { owlTinyDir, tinyConfig, trainTinySteps } from '../helpers/owl-steps.ts';

const FX = owlTinyDir();
const withFixture = FX ? test.serial : test.skip;

/** Parameters stored in each dtype by the plan of a shipped config (LoRA keys included when the stage adds them). */
function planOf(file: string, dtype: 'f32' | 'bf16') {
  const c = loadConfig(file);
  const oc = parseOwlConfig(modelSizes(c));
  const names = [...expectedKeys(oc)];
  if (c.stage.lora) {
    const l = c.stage.lora;
    names.push(...expectedLoraKeys(oc, parseAdapterConfig({ r: l.r, lora_alpha: l.alpha, lora_dropout: l.dropout, target_modules: l.targets })));
  }
  const plan = precisionPlan(names.map(([n]) => n), { train: c.stage.train, dtype });
  const count = (d: string) => names.filter(([n]) => plan.get(n) === d).reduce((s, [, shape]) => s + shape.reduce((a, b) => a * b, 1), 0);
  return { plan, f32: count('f32'), bf16: count('bf16'), sizes: modelSizes(c), lora: c.stage.lora };
}

test.serial('precision plan, stage 1 (7B, bf16): vision, queries and abstractor are fp32 masters, the LLM is stored in bf16', (t) => {
  const p = planOf('configs/stage1-7b.yaml', 'bf16');
  const n = countParams(p.sizes);
  t.is(p.f32, n.vision + n.queries + n.abstractor);
  t.is(p.f32, 384_653_312);
  t.is(p.bf16, n.llm);
  t.is(p.plan.get('vision_model.encoder.layers.0.self_attn.query_key_value.weight'), 'f32');
  t.is(p.plan.get('query_tokens'), 'f32');
  t.is(p.plan.get('abstractor.visual_fc.weight'), 'f32');
  t.is(p.plan.get('language_model.model.layers.31.mlp.down_proj.weight'), 'bf16');
  t.is(p.plan.get('language_model.lm_head.weight'), 'bf16');
});

test.serial('precision plan, stage 2 (7B, bf16, LoRA only): LoRA A/B are fp32 masters, every base weight is bf16', (t) => {
  const p = planOf('configs/stage2-7b.yaml', 'bf16');
  const n = countParams(p.sizes, p.lora);
  t.is(p.f32, n.lora);
  t.is(p.f32, 4_194_304);
  t.is(p.bf16, n.total);
  t.is(p.plan.get('base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight'), 'f32');
  t.is(p.plan.get('language_model.model.layers.0.self_attn.q_proj.weight'), 'bf16');
  t.is(p.plan.get('abstractor.encoder.layers.0.crossattention.attention.query.weight'), 'bf16');
});

test.serial('precision plan with f32, and bf16 on the CPU (which computes in f32): everything f32', (t) => {
  t.is(computeDtype('cpu', 'bf16'), 'f32');
  t.is(computeDtype('cuda:0', 'bf16'), 'bf16');
  t.is(computeDtype('cuda:1', 'f32'), 'f32');
  for (const f of ['configs/stage1-7b.yaml', 'configs/stage2-7b.yaml']) {
    t.is(planOf(f, 'f32').bf16, 0);
    t.is(planOf(f, computeDtype('cpu', 'bf16')).bf16, 0);
  }
});

test.serial('place: a no-op where the tensor already is; otherwise one converted tensor with the name, the source freed', (t) => {
  scope(() => {
    const a = tensor([1.5, -2.25, 3.1], [3]);
    a.name = 'w';
    t.is(place(a, 'cpu', 'f32'), a);
    const b = place(a, 'cpu', 'bf16');
    t.not(b, a);
    t.true(a.disposed);
    t.is(b.dtype, 'bf16');
    t.is(b.name, 'w');
    t.deepEqual(Array.from(b.toFloat32()), [1.5, -2.25, 3.09375]);
  });
});

test.serial('ForwardContext: a master read in the compute dtype is cast once per forward, and its gradient arrives in fp32', (t) => {
  const live = liveTensors();
  const w = tensor([1.5, -2.25, 3, 0.5], [4]);
  w.requiresGrad = true;
  const frozen = tensor([1, 2], [2], { dtype: 'bf16' });
  const params = new Map<string, Tensor>([['w', w], ['frozen', frozen]]);
  scope(() => {
    const ctx = new ForwardContext(params, true, null, 1, 'bf16');
    const c1 = ctx.get('w');
    t.is(c1.dtype, 'bf16');
    const nodes = tapeLength();
    t.is(ctx.get('w'), c1, 'the working copy is made once per forward');
    t.is(tapeLength(), nodes);
    t.is(ctx.get('frozen'), frozen, 'a weight stored in the compute dtype is used as is');
    t.is(ctx.maybe('missing.bias'), null);
    t.not(new ForwardContext(params, true, null, 1, 'bf16').get('w'), c1, 'a new forward makes a new copy');
    // (the CPU computes in f32: widen the bf16 copy back to f32 for the arithmetic) loss_i = w_i², dloss/dw = 2w
    const y = cast(c1, 'f32');
    backward(mul(y, y), ones([4]));
  });
  t.is(w.grad!.dtype, 'f32');
  t.deepEqual(Array.from(w.grad!.toFloat32()), [3, -4.5, 6, 1]);
  t.is(new ForwardContext(params, true).get('w'), w, 'without a compute dtype each weight is used as stored');
  w.dispose();
  frozen.dispose();
  t.is(liveTensors(), live);
});

withFixture('loading into a bf16 plan: masters exact from the file, frozen weights rounded once, the expected order', (t) => {
  const oc = parseOwlConfig(JSON.parse(readFileSync(join(FX!, 'config.json'), 'utf8')));
  const expected = expectedKeys(oc);
  const ref = loadModel(FX!);
  const got = loadPlaced(FX!, expected, 'cpu', { train: ['vision', 'queries', 'abstractor'], dtype: 'bf16' });
  t.deepEqual([...got.keys()], [...expected.keys()]);
  for (const [k, g] of got) {
    const want = ref.params.get(k)!;
    if (k.startsWith('language_model.')) {
      t.is(g.dtype, 'bf16', k);
      const rounded = scope(() => cast(want, 'bf16').data());
      t.deepEqual(g.data(), rounded, k);
    } else {
      t.is(g.dtype, 'f32', k);
      t.deepEqual(g.data(), want.data(), k);
    }
  }
  for (const m of [ref.params, got]) for (const x of m.values()) x.dispose();
});

// The trainer with the placed model against the model built as before (loadModel: f32 on the CPU, no compute
// dtype): identical losses, gradient norms and trained weights, bit for bit.
for (const stage of [1, 2] as const) {
  withFixture(`stage ${stage} on the CPU: the placed model (f32, and bf16 computed as f32) trains bit for bit like before`, async (t) => {
    const steps = 3;
    const live = liveTensors();
    const before = loadModel(FX!, { adapterDir: stage === 2 ? FX! : null });
    const initial = new Map([...before.params].map(([k, p]) => [k, p.toFloat32()]));
    const ref = await trainTinySteps(before, tinyConfig(FX!, stage, 'cpu', 'f32'), FX!, steps);
    t.true(ref.losses.every(Number.isFinite));
    t.true(ref.losses[steps - 1] < ref.losses[0], `the loss falls: ${ref.losses.join(', ')}`);
    let moved = 0;
    for (const [k, w] of ref.weights) if (w.some((v, i) => v !== initial.get(k)![i])) moved++;
    t.true(moved > ref.weights.size / 2, `${moved} of ${ref.weights.size} trainable tensors changed`);
    for (const dtype of ['f32', 'bf16'] as const) {
      const c = tinyConfig(FX!, stage, 'cpu', dtype);
      const model = buildModel(c, modelSizes(c), { env: {} });
      t.is(model.computeDtype, null);
      t.true([...model.params.values()].every((p) => p.dtype === 'f32' && p.device === 'cpu'));
      const got = await trainTinySteps(model, c, FX!, steps);
      t.deepEqual(got.losses, ref.losses, dtype);
      t.deepEqual(got.gradNorms, ref.gradNorms, dtype);
      t.deepEqual([...got.weights.keys()], [...ref.weights.keys()]);
      for (const [k, w] of ref.weights) t.deepEqual(Buffer.from(got.weights.get(k)!.buffer), Buffer.from(w.buffer), `${dtype} ${k}`);
    }
    t.is(liveTensors(), live);
  });
}

withFixture('the final export is written in the compute dtype (bf16 here only by setting it), the adapter as held', async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'owlet-export-'));
  const owl = loadModel(FX!, { adapterDir: FX! });
  try {
    owl.computeDtype = 'bf16';
    const m = new OwlTrainable(owl, 1);
    await exportOwl(m, tinyConfig(FX!, 2, 'cpu', 'bf16'), tmp);
    const header = (f: string) => {
      const buf = readFileSync(f);
      return JSON.parse(buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString()) as Record<string, { dtype: string }>;
    };
    const base = Object.entries(header(join(tmp, 'model.safetensors'))).filter(([k]) => k !== '__metadata__');
    t.true(base.length > 50 && base.every(([, v]) => v.dtype === 'BF16'));
    const lora = Object.entries(header(join(tmp, 'adapter/adapter_model.safetensors'))).filter(([k]) => k !== '__metadata__');
    t.true(lora.length > 0 && lora.every(([, v]) => v.dtype === 'F32'));
    // The adapter's base is this export (its queries and abstractor were trained too), for AutoPeftModel; the
    // config says what the weights are (torch_dtype) and which class loads them.
    t.is(JSON.parse(readFileSync(join(tmp, 'adapter/adapter_config.json'), 'utf8')).base_model_name_or_path, resolve(tmp));
    const cfg = JSON.parse(readFileSync(join(tmp, 'config.json'), 'utf8'));
    t.is(cfg.torch_dtype, 'bfloat16');
    t.deepEqual(cfg.architectures, ['MplugOwlForConditionalGeneration']);
  } finally {
    for (const p of owl.params.values()) p.dispose();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test.serial('a fresh model is placed as it is initialised: same values as initParams, one tensor at a time', (t) => {
  const c = tinyConfig('unused', 1, 'cpu', 'f32');
  c.model.weights = undefined;
  c.model.config = undefined;
  c.model.sizes = {
    num_query_tokens: 4,
    vision_config: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, image_size: 56, patch_size: 14, num_channels: 3 },
    visual_abstractor_config: { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 1, num_attention_heads: 2, encoder_hidden_size: 32 },
    text_config: { hidden_size: 48, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 97 },
  };
  const live = liveTensors();
  const a = buildModel(c, modelSizes(c), { env: {} });
  const b = new MplugOwl(parseOwlConfig(modelSizes(c)), initParams(parseOwlConfig(modelSizes(c)), { seed: c.run.seed }));
  t.deepEqual([...a.params.keys()], [...b.params.keys()]);
  for (const [k, p] of a.params) t.deepEqual(p.data(), b.params.get(k)!.data(), k);
  for (const m of [a, b]) for (const p of m.params.values()) p.dispose();
  t.is(liveTensors(), live);
});

test.serial('a bf16 model gets its pixels as bf16, rounded on the host as a cast rounds them; f32 otherwise', (t) => {
  const R = 4, px = Float32Array.from({ length: 2 * 3 * R * R }, (_, i) => Math.sin(i * 1.7) * 2.1 + 1e-3 * i);
  const b = {
    batchSize: 1, maxLength: 3, resolution: R, inputIds: new Int32Array(4), numImages: Int32Array.from([2]),
    nonPaddingMask: new Int32Array(3).fill(1), nonMediaMask: new Int32Array(3).fill(1), promptMask: new Int32Array(3).fill(1),
    pixelValues: px, sampleIds: ['a'], labelCount: 3, tokenCount: 4,
  };
  scope(() => {
    const f = owlBatch(b, 'cpu').pixelValues!, h = owlBatch(b, 'cpu', 'bf16').pixelValues!;
    t.is(f.dtype, 'f32');
    t.deepEqual(Array.from(f.toFloat32()), Array.from(px));
    t.is(h.dtype, 'bf16');
    t.deepEqual(h.shape, [2, 3, R, R]);
    t.deepEqual(Array.from(h.data<'bf16'>()), Array.from(cast(f, 'bf16').data<'bf16'>()));
  });
});
