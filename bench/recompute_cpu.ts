// Activation recomputation on the CPU: a stage-2 training step (LoRA r8 q/v + queries + abstractor; LLM and ViT
// frozen) with and without per-layer recomputation of the LLM, alternating the two: median step time, peak storage
// during the step (the backend's peak counter, reset before each step) and storage held at the loss, both above
// the weights and optimizer state held before the step. The model is
// LLM-heavy (a small ViT, 112-px images) so the LLM share of the step dominates as in the 7B stage.
// Run: npx tsx bench/recompute_cpu.ts [rounds] [--record]
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { cpu } from '../lib/native.ts';
import { MplugOwl, initLora, initParams, parseAdapterConfig, parseOwlConfig } from '../lib/model/index.ts';
import { syntheticBatch } from './synthetic-batch.ts';
import { AdamW, backward, bytesInUse, scope } from '../lib/tensor/index.ts';

const LAYERS = 8;
const cfg = parseOwlConfig({
  num_query_tokens: 16,
  vision_config: { hidden_size: 128, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 2, image_size: 112, patch_size: 14, layer_norm_eps: 1e-6 },
  visual_abstractor_config: { hidden_size: 128, encoder_hidden_size: 128, intermediate_size: 344, num_hidden_layers: 2, num_attention_heads: 2, layer_norm_eps: 1e-6, attention_probs_dropout_prob: 0 },
  text_config: { hidden_size: 384, intermediate_size: 1024, num_hidden_layers: LAYERS, num_attention_heads: 6, vocab_size: 32000, rms_norm_eps: 1e-6 },
});

const params = initParams(cfg, { seed: 0, std: 0.05 });
const adapter = parseAdapterConfig({ r: 8, lora_alpha: 32, lora_dropout: 0.05, target_modules: ['q_proj', 'v_proj'] });
initLora(cfg, adapter, params);
const model = new MplugOwl(cfg, params, adapter);
model.setTrainable(['queries', 'abstractor', 'lora']);
const trainable = [...model.trainable().values()];
const opt = new AdamW({ lr: 1e-4 });
const batch = syntheticBatch({ batch: 4, length: 256, resolution: 112 });
const be = cpu();

function step(recompute: boolean): { ms: number; peak: number; atLoss: number } {
  const base = bytesInUse('cpu');
  be.resetPeakMemory();
  const t0 = performance.now();
  let atLoss = 0;
  scope(() => {
    const { loss } = model.forward(batch, { training: true, logits: 'counted', recompute });
    atLoss = bytesInUse('cpu') - base;
    backward(loss);
  });
  opt.step(trainable);
  opt.zeroGrad(trainable);
  return { ms: performance.now() - t0, peak: be.memory().peakBytes - base, atLoss };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rounds = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 5);
step(false); step(true); // warm-up
const runs = { off: [] as ReturnType<typeof step>[], on: [] as ReturnType<typeof step>[] };
for (let r = 0; r < rounds; r++) {
  runs.off.push(step(false));
  runs.on.push(step(true));
}
const MB = 2 ** 20;
const summary = (xs: ReturnType<typeof step>[]) => ({
  median_ms: +median(xs.map((x) => x.ms)).toFixed(0), min_ms: +Math.min(...xs.map((x) => x.ms)).toFixed(0), ms: xs.map((x) => +x.ms.toFixed(0)),
  peak_mib: +(Math.max(...xs.map((x) => x.peak)) / MB).toFixed(1), at_loss_mib: +(xs[0].atLoss / MB).toFixed(1),
});
const off = summary(runs.off), on = summary(runs.on);
const out = {
  date: new Date().toISOString(), cpu: cpus()[0]?.model, threads: Number(be.info().threads),
  model: `LLaMA ${LAYERS}x384 (ffn 1024, vocab 32000), ViT 2x128 @112px, batch 4x257 tokens, stage 2 LoRA r8 q/v`,
  weights_mib: +(base0() / MB).toFixed(1), off, on,
  // On a shared machine the fastest round is the least disturbed one: compare minima as well as medians.
  time_ratio_median: +(on.median_ms / off.median_ms).toFixed(3), time_ratio_min: +(on.min_ms / off.min_ms).toFixed(3), peak_ratio: +(on.peak_mib / off.peak_mib).toFixed(3),
};
function base0(): number { return [...params.values()].reduce((s, t) => s + t.numel * 4, 0); }
console.log(`without: ${off.median_ms} ms (min ${off.min_ms}), peak +${off.peak_mib} MiB (at the loss +${off.at_loss_mib} MiB)`);
console.log(`with:    ${on.median_ms} ms (min ${on.min_ms}), peak +${on.peak_mib} MiB (at the loss +${on.at_loss_mib} MiB)`);
console.log(JSON.stringify(out));
if (process.argv.includes('--record')) {
  mkdirSync('bench/results', { recursive: true });
  writeFileSync(`bench/results/recompute_cpu_${out.date.slice(0, 10)}.json`, JSON.stringify(out, null, 1) + '\n');
}
batch.pixelValues?.dispose();
for (const p of params.values()) p.dispose();
opt.dispose();
