// The host's own cost per training step: the GPU benchmark's model structure (ViT 24 layers, abstractor 6 layers with
// 64 queries, 4 LLaMA layers; stage 1 or stage 2 with LoRA q/v) at tiny widths on the CPU, so the native kernels cost
// almost nothing and the step time is what JS, N-API and the autograd spend around them. With OWLET_PROFILE_OPS=1 the
// time inside native calls is split out too (host mode: no synchronisation). With --split, V8's sampling profiler runs
// over the timed steps too and says where the host's time went per step: JS, native calls (the addon's binding and
// kernels, and lib/native.ts's wrapper around them), the garbage collector, and V8's own.
// Run: [OWLET_PROFILE_OPS=1] npx tsx bench/host_overhead.ts [--stage 1|2] [--steps N] [--split]
import { Session } from 'node:inspector/promises';
import { parseOwlConfig } from '../lib/model/index.ts';
import { opProfile, opProfileAvailable, resetOpProfile, setOpProfiling } from '../lib/op-profile.ts';
import { AdamW, backward, scope } from '../lib/tensor/index.ts';
import { numberArg, stageModel } from './stage-model.ts';
import { syntheticBatch } from './synthetic-batch.ts';

const STAGE = numberArg('stage', 1), STEPS = numberArg('steps', 20);

const cfg = parseOwlConfig({
  num_query_tokens: 64,
  vision_config: { hidden_size: 32, intermediate_size: 128, num_hidden_layers: 24, num_attention_heads: 2, image_size: 28, patch_size: 14, layer_norm_eps: 1e-6 },
  visual_abstractor_config: { hidden_size: 32, encoder_hidden_size: 32, intermediate_size: 88, num_hidden_layers: 6, num_attention_heads: 2, layer_norm_eps: 1e-6, attention_probs_dropout_prob: 0 },
  text_config: { hidden_size: 32, intermediate_size: 88, num_hidden_layers: 4, num_attention_heads: 2, vocab_size: 512, rms_norm_eps: 1e-6 },
});
const model = stageModel(cfg, STAGE, { std: 0.05, loraDropout: 0.05 });
const trainable = [...model.trainable().values()];
const opt = new AdamW({ lr: 1e-4 });
const batch = syntheticBatch({ batch: 2, length: 80, resolution: 28, media: cfg.mediaTokenLength, vocab: 512 });

function step(): number {
  const t0 = performance.now();
  scope(() => {
    const { loss } = model.forward(batch, { training: true, logits: 'counted' });
    backward(loss);
  });
  opt.step(trainable, 0.5);
  opt.zeroGrad(trainable);
  return performance.now() - t0;
}

interface CpuProfile { nodes: { id: number; callFrame: { functionName: string; url: string } }[]; samples: number[]; timeDeltas: number[] }

/** Per step, ms of samples by where the innermost frame is. */
function splitOf(p: CpuProfile, steps: number): Record<string, number> {
  const where = new Map<number, string>();
  for (const n of p.nodes) {
    const { functionName: f, url } = n.callFrame;
    // (an addon's function is a frame with no script; V8 names such frames unreliably)
    where.set(n.id, url.endsWith('lib/native.ts') || (url === '' && !f.startsWith('(')) ? 'native'
      : f === '(garbage collector)' ? 'gc' : f === '(program)' ? 'v8' : f === '(idle)' || f === '(root)' ? 'idle' : 'js');
  }
  const ms: Record<string, number> = { js: 0, native: 0, gc: 0, v8: 0, idle: 0 };
  p.samples.forEach((id, i) => { ms[where.get(id)!] += p.timeDeltas[i] / 1e3 / steps; });
  return ms;
}

for (let i = 0; i < 3; i++) step();
const times: number[] = [];
if (opProfileAvailable()) { resetOpProfile(); setOpProfiling('host'); }
const split = process.argv.includes('--split') ? new Session() : null;
if (split) {
  split.connect();
  await split.post('Profiler.enable');
  await split.post('Profiler.setSamplingInterval', { interval: 100 });
  await split.post('Profiler.start');
}
for (let i = 0; i < STEPS; i++) times.push(step());
setOpProfiling(null);
if (split) {
  const { profile } = await split.post('Profiler.stop') as unknown as { profile: CpuProfile };
  const ms = splitOf(profile, STEPS);
  console.log(`stage ${STAGE}, ms per step by V8's samples: ` +
    Object.entries(ms).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', '));
}
times.sort((a, b) => a - b);
const med = times[times.length >> 1];
let line = `stage ${STAGE}: median step ${med.toFixed(2)} ms over ${STEPS} steps (min ${times[0].toFixed(2)})`;
if (opProfileAvailable()) {
  const ops = opProfile(), calls = ops.reduce((a, o) => a + o.calls, 0) / STEPS, ms = ops.reduce((a, o) => a + o.ms, 0) / STEPS;
  line += `; ${calls.toFixed(0)} native calls per step, ${ms.toFixed(2)} ms inside them (${(1e3 * ms / calls).toFixed(1)} µs each), ` +
    `${(med - ms).toFixed(2)} ms outside (${(1e3 * (med - ms) / calls).toFixed(1)} µs per call)`;
  const byOp = new Map<string, { calls: number; ms: number }>();
  for (const o of ops) {
    const k = o.op.split(' ')[0], e = byOp.get(k) ?? { calls: 0, ms: 0 };
    e.calls += o.calls; e.ms += o.ms;
    byOp.set(k, e);
  }
  console.log(line);
  for (const [k, e] of [...byOp].sort((a, b) => b[1].ms - a[1].ms).slice(0, Number(process.env.TOP ?? 12))) {
    console.log(`  ${(e.ms / STEPS).toFixed(3).padStart(8)} ms ${String(Math.round(e.calls / STEPS)).padStart(5)}× ${k}`);
  }
} else console.log(line);
