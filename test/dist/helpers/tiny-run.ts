// A tiny stage-2 run for the multi-process tests: demo data at 56 px (a few images, the text-only sums), a model of a
// few thousand parameters besides the embeddings, LoRA with dropout and abstractor dropout (so the per-micro-batch
// seeds matter), global batch 4 in micro-batches of 2, an evaluation on 4 samples at the end. Written once per test
// file into a temporary folder.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateDemoData } from '../../../lib/data/index.ts';

export interface TinyRun { dir: string; config: string }

export async function tinyRun(): Promise<TinyRun> {
  const dir = mkdtempSync(join(tmpdir(), 'owlet-dist-'));
  const data = join(dir, 'data');
  await generateDemoData({ out: data, trainImages: 12, evalImages: 4, imageSize: 56, maxTurns: 1, system: 'A chat.' });
  const config = join(dir, 'tiny.yaml');
  writeFileSync(config, `
run: { name: tiny, out_dir: ${join(dir, 'run')}, seed: 5, device: cpu }
model:
  sizes:
    num_query_tokens: 4
    vision_config: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, image_size: 56, patch_size: 28 }
    visual_abstractor_config: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, encoder_hidden_size: 16, attention_probs_dropout_prob: 0.1 }
    text_config: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, vocab_size: 32000 }
stage:
  id: 2
  train: [lora, abstractor]
  lora: { r: 4, alpha: 8, dropout: 0.1, targets: [q_proj, v_proj] }
data:
  train:
    - { path: ${join(data, 'train_instructions.jsonl')} }
    - { path: ${join(data, 'train_text.jsonl')}, weight: 0.2 }
  eval: [{ path: ${join(data, 'eval_instructions.jsonl')} }]
  max_length: 40
  micro_batch: 2
  image: { size: 56, train_transform: resize }
optimizer: { lr: 1.0e-3, weight_decay: 0.01 }
schedule: { type: constant }
training: { steps: 3, global_batch: 4, clip: 1.0 }
logging: { every: 1, save_every: 0, keep_last: 3, tensorboard: true, plots: false, progress: false }
`);
  return { dir, config };
}

/** A port that was free a moment ago (the OS's ephemeral range). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}
