// Training-step time on the CPU against the PyTorch peer (../shared/reference/torch_owl.py bench), same config, same
// machine, alternating the two: ViT 224/14 width 192 ×4, abstractor 16 queries width 192 ×2, LLaMA 256 ×4 with a
// 32000 vocabulary, batch 8 × 97 tokens with one image each, AdamW. Stage 1 trains vision + queries + abstractor;
// stage 2 LoRA r8 q/v + queries + abstractor. Run: npx tsx bench/cpu_step.ts [rounds] [--record]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { cpu } from '../lib/native.ts';
import { parseOwlConfig } from '../lib/model/index.ts';
import { stageModel } from './stage-model.ts';
import { syntheticBatch } from './synthetic-batch.ts';
import { AdamW, backward, scope } from '../lib/tensor/index.ts';

const cfg = parseOwlConfig({
  num_query_tokens: 16,
  vision_config: { hidden_size: 192, intermediate_size: 768, num_hidden_layers: 4, num_attention_heads: 3, image_size: 224, patch_size: 14, layer_norm_eps: 1e-6 },
  visual_abstractor_config: { hidden_size: 192, encoder_hidden_size: 192, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 3, layer_norm_eps: 1e-6, attention_probs_dropout_prob: 0 },
  text_config: { hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4, num_attention_heads: 4, vocab_size: 32000, rms_norm_eps: 1e-6 },
});

function owletStage(stage: 1 | 2, steps = 5): number[] {
  const model = stageModel(cfg, stage, { std: 0.05, loraDropout: 0 });
  const params = model.params;
  const trainable = [...model.trainable().values()];
  const opt = new AdamW({ lr: 1e-4 });
  const batch = syntheticBatch({ batch: 8, length: 96, resolution: 224 });
  const times: number[] = [];
  for (let i = 0; i <= steps; i++) {
    const t0 = performance.now();
    scope(() => {
      const { loss } = model.forward(batch, { training: true });
      backward(loss);
    });
    opt.step(trainable);
    opt.zeroGrad(trainable);
    if (i > 0) times.push(performance.now() - t0);
  }
  batch.pixelValues?.dispose();
  for (const p of params.values()) p.dispose();
  return times;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ref = join(import.meta.dirname, '../../shared/reference/torch_owl.py');
const rounds = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 2);
const threads = Number(cpu().info().threads);
const out: Record<string, unknown> = { date: new Date().toISOString(), cpu: cpus()[0]?.model, threads };
for (const stage of [1, 2] as const) {
  const ours: number[] = [], peer: number[] = [];
  for (let r = 0; r < rounds; r++) {
    if (existsSync(ref) && existsSync('/usr/bin/python3')) {
      const line = execFileSync('/usr/bin/python3', [ref, 'bench', String(stage), String(threads)]).toString();
      const m = /median step (\d+) ms/.exec(line);
      if (m) peer.push(Number(m[1]));
    }
    ours.push(median(owletStage(stage)));
  }
  const o = median(ours), p = peer.length ? median(peer) : NaN;
  out[`stage${stage}`] = { owlet_ms: +o.toFixed(0), torch_ms: p, ratio: +(o / p).toFixed(3), owlet_rounds: ours.map((x) => +x.toFixed(0)), torch_rounds: peer };
  console.log(`stage ${stage}: owlet ${o.toFixed(0)} ms, torch ${p} ms, ratio ${(o / p).toFixed(2)}`);
}
console.log(JSON.stringify(out));
if (process.argv.includes('--record')) {
  mkdirSync('bench/results', { recursive: true });
  writeFileSync(`bench/results/cpu_step_${String(out.date).slice(0, 10)}.json`, JSON.stringify(out, null, 1) + '\n');
}
