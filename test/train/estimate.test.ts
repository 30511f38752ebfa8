import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { loadConfig, modelSizes } from '../../lib/train/config.ts';
import { countParams, estimateMemory, estimateStepFlops, formatEstimate } from '../../lib/train/estimate.ts';
import { OwlSizes, PRESETS } from '../../lib/train/model-sizes.ts';
import { MplugOwl, initLora, initParams, parseAdapterConfig, parseOwlConfig } from '../../lib/model/index.ts';
import { bytesInUse, clearTape, scope } from '../../lib/tensor/index.ts';
import { syntheticBatch } from '../../bench/synthetic-batch.ts';

const owl7b = OwlSizes.parse(PRESETS['mplug-owl-llama-7b']);

test('parameter counts of the 7B model equal the spec (§1.6)', (t) => {
  const p = countParams(owl7b, { r: 8, targets: ['q_proj', 'v_proj'] });
  t.is(p.vision, 303_179_776);
  t.is(p.queries + p.abstractor, 81_473_536);
  t.is(p.queries, 65_536);
  t.is(p.llm, 6_738_415_616);
  t.is(p.total, 7_123_068_928);
  t.is(p.lora, 4_194_304);
  t.throws(() => countParams(owl7b, { r: 8, targets: ['qkv'] }), { message: /not a LLaMA linear/ });
});

// The owl-tiny parity fixture: its config.json sizes, and the sum of the shapes in its model.safetensors.
const TINY = OwlSizes.parse({ num_query_tokens: 8,
  vision_config: { hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, image_size: 224, patch_size: 14 },
  visual_abstractor_config: { hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 96, encoder_hidden_size: 64 },
  text_config: { hidden_size: 96, intermediate_size: 160, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 512 } });

test('parameter count of a small model equals the number of weights in its official-layout file', (t) => {
  t.is(countParams(TINY).total, 464_672);
  const file = '/work/shared/fixtures/owl-tiny/model.safetensors';
  if (!existsSync(file)) { t.pass('fixture not present: the constant above was read from it'); return; }
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString()) as Record<string, { shape?: number[] }>;
  const sum = Object.entries(header).filter(([k]) => k !== '__metadata__').reduce((s, [, v]) => s + v.shape!.reduce((a, b) => a * b, 1), 0);
  t.is(countParams(TINY).total, sum);
});

test('stage-2 7B memory (shipped config): bf16 weights, fp32 LoRA state, checkpointed LLM activations', (t) => {
  const c = loadConfig('configs/stage2-7b.yaml');
  const e = estimateMemory({ sizes: modelSizes(c), train: c.stage.train, lora: c.stage.lora, dtype: c.model.dtype,
    microBatch: c.data.micro_batch, maxLength: c.data.max_length, recompute: c.model.gradient_checkpointing });
  const lora = 4_194_304;
  t.is(e.trainable, lora);
  t.is(e.bytes.weights, 7_123_068_928 * 2 + lora * 4);
  t.is(e.bytes.masters, 0);
  t.is(e.bytes.gradients, lora * 4);
  t.is(e.bytes.optimizer, lora * 8);
  const tokens = 4 * 2049, H = 4096, F = 11008;
  // per token, bf16: norm inputs 2H, q/k/v/output 4H, gate/up 2F, the q/k/v input H (LoRA on q and v reads it),
  // LoRA's x·Aᵀ for q and v; fp32 statistics. Frozen gate/up/down keep neither their input nor the SwiGLU output.
  const layer = (7 * H + 2 * F + 8 * 2) * 2 + (2 + 32) * 4;
  const final = tokens * (H * 2 + 4);
  t.is(e.bytes.activations, 32 * tokens * H * 2 + tokens * layer + final);
  t.is(e.other.activations, 32 * tokens * layer + final, 'without checkpointing every layer keeps its set');
  t.is(e.bytes.logits, 2 * tokens * 32000 * 2);
  t.true(e.bytes.total > 17 * 2 ** 30 && e.bytes.total < 21 * 2 ** 30, `${e.bytes.total / 2 ** 30} GiB`);
  t.true(e.other.total > e.bytes.total + 20 * 2 ** 30);
  const text = formatEstimate(e, { stage: 2, train: c.stage.train, dtype: 'bf16', microBatch: 4, recompute: true });
  t.regex(text, /LoRA 4,194,304/);
  t.regex(text, /stage 2: training lora → 4,194,304 trainable parameters/);
  t.regex(text, /total +\d+\.\d\d GiB/);
});

test('stage-1 7B memory: ViT + abstractor state with fp32 masters, vision activations kept', (t) => {
  const c = loadConfig('configs/stage1-7b.yaml');
  const o = { sizes: modelSizes(c), train: c.stage.train, dtype: c.model.dtype, microBatch: c.data.micro_batch,
    maxLength: c.data.max_length, recompute: true };
  const e = estimateMemory(o);
  const trainable = 303_179_776 + 81_473_536;
  t.is(e.trainable, trainable);
  t.is(e.bytes.masters, trainable * 4);
  t.is(e.bytes.gradients, trainable * 4);
  t.is(e.bytes.optimizer, trainable * 8);
  const withoutVision = estimateMemory({ ...o, train: ['queries', 'abstractor'] });
  const K = 257, h = 1024, f = 4096, images = 32;
  const visionAct = images * ((K - 1) * 3 * 14 * 14 * 2 + 24 * K * ((8 * h + f) * 2 + (4 + 16) * 4) + 2 * K * h * 2 + 2 * K * 4);
  t.is(e.bytes.activations - withoutVision.bytes.activations, visionAct);
});

test('step FLOPs: forward + backward ≈ 3× forward for a fully back-propagated LLM, plus weight gradients', (t) => {
  const base = { sizes: owl7b, microBatch: 1, maxLength: 2047 };
  const lora = estimateStepFlops({ ...base, train: ['lora'], lora: { r: 8, targets: ['q_proj', 'v_proj'] } });
  const full = estimateStepFlops({ ...base, train: ['llm'] });
  // 6·N·T rule of thumb for full fine-tuning of the LLM (N without the embedding lookup), within attention's share
  const N = 6_738_415_616 - 32000 * 4096;
  t.true(full > 6 * N * 2048 && full < 6 * N * 2048 * 1.3, `${full / (6 * N * 2048)}`);
  t.true(lora < full && lora > 0.6 * full && lora < 0.7 * full, `${lora / full}`); // no weight gradients: ≈ 4/6
  t.is(estimateStepFlops({ ...base, train: ['llm'], gradAccum: 4 }), 4 * full);
});

// The estimate's activations and logits against what the tape really holds at the loss: a small model run on the
// CPU in f32 (the element counts are the same in bf16), stage 1 (frozen LLM back-propagated) and stage 2 (LoRA on
// q/v, frozen vision).
for (const stage of [1, 2] as const) {
  test(`stage-${stage} activations estimated within 1% of the bytes the tape holds at the loss (CPU, f32)`, (t) => {
    const sizes = OwlSizes.parse({ num_query_tokens: 8,
      vision_config: { hidden_size: 64, intermediate_size: 256, num_hidden_layers: 2, num_attention_heads: 2, image_size: 56, patch_size: 14, layer_norm_eps: 1e-6 },
      visual_abstractor_config: { hidden_size: 64, encoder_hidden_size: 64, intermediate_size: 160, num_hidden_layers: 2, num_attention_heads: 2, layer_norm_eps: 1e-6, attention_probs_dropout_prob: 0 },
      text_config: { hidden_size: 96, intermediate_size: 256, num_hidden_layers: 3, num_attention_heads: 3, vocab_size: 32000, rms_norm_eps: 1e-6 } });
    const cfg = parseOwlConfig(sizes as never);
    const params = initParams(cfg, { seed: 2, std: 0.05 });
    const lora = { r: 4, targets: ['q_proj', 'v_proj'] };
    const adapter = stage === 2 ? parseAdapterConfig({ r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: lora.targets }) : null;
    if (adapter) initLora(cfg, adapter, params);
    const m = new MplugOwl(cfg, params, adapter);
    const train = stage === 1 ? ['vision', 'queries', 'abstractor'] as const : ['lora', 'queries', 'abstractor'] as const;
    m.setTrainable([...train]);
    const B = 3, L = 40;
    const batch = syntheticBatch({ batch: B, length: L, resolution: 56, media: cfg.mediaTokenLength });
    const e = estimateMemory({ sizes, train, lora: stage === 2 ? lora : undefined, dtype: 'f32', microBatch: B, maxLength: L, recompute: false });
    const base = bytesInUse('cpu');
    const held = scope(() => {
      const r = m.forward(batch, { training: true, logits: 'all' });
      const bytes = bytesInUse('cpu') - base - r.loss.handle.nbytes;
      clearTape();
      return bytes;
    });
    const want = e.bytes.activations + e.bytes.logits;
    t.log(`held at the loss ${held} B, estimated ${want} B (activations ${e.bytes.activations}, logits ${e.bytes.logits})`);
    t.true(Math.abs(held - want) <= 0.01 * e.bytes.activations, `${held} vs ${want}`);
    batch.pixelValues?.dispose();
    for (const p of params.values()) p.dispose();
  });
}
