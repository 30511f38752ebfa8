// Resuming the real model: a stage-2 run (LoRA with dropout, abstractor dropout, augmented images) interrupted after
// 3 steps and resumed for 3 more ends with exactly the weights (bit for bit) and losses of 6 uninterrupted steps.
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateDemoData } from '../../lib/data/index.ts';
import { io } from '../../lib/model/index.ts';
import { validateConfig } from '../../lib/train/config.ts';
import { owlComponents } from '../../lib/train/owl-components.ts';
import { trainStage } from '../../lib/train/stage.ts';

const tmp = mkdtempSync(join(tmpdir(), 'owlet-resume-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

function config(out: string, steps: number, saveEvery: number) {
  return validateConfig({
    run: { name: 'resume', out_dir: out, seed: 7, device: 'cpu' },
    model: { sizes: {
      num_query_tokens: 4,
      vision_config: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, image_size: 56, patch_size: 14 },
      visual_abstractor_config: { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 1, num_attention_heads: 2, encoder_hidden_size: 32, attention_probs_dropout_prob: 0.1 },
      text_config: { hidden_size: 48, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 32000 },
    } },
    stage: { id: 2, train: ['lora', 'queries', 'abstractor'], lora: { r: 4, alpha: 8, dropout: 0.1, targets: ['q_proj', 'v_proj'] } },
    data: { train: [{ path: join(tmp, 'data/train_instructions.jsonl') }], max_length: 48, micro_batch: 3,
      image: { size: 56, train_transform: 'random-resized-crop' } },
    optimizer: { lr: 1e-3, weight_decay: 0.01 },
    schedule: { type: 'linear', warmup_steps: 2 },
    training: { steps, grad_accum: 2, clip: 1 },
    logging: { every: 1, save_every: saveEvery, keep_last: 2, tensorboard: false, plots: false, progress: false },
  });
}

test('a resumed stage-2 run continues bit for bit like an uninterrupted one', async (t) => {
  await generateDemoData({ out: join(tmp, 'data'), trainImages: 12, evalImages: 0, imageSize: 56, system: 'Hi.' });
  const quiet = { log: () => {}, warn: () => {} };
  await trainStage(config(join(tmp, 'straight'), 6, 0), owlComponents(), quiet);
  await trainStage(config(join(tmp, 'cut'), 3, 3), owlComponents(), quiet);
  await trainStage(config(join(tmp, 'cut'), 6, 3), owlComponents(), { ...quiet, resume: 'auto' });
  const a = io.loadSafetensors(join(tmp, 'straight/final/model.safetensors'));
  const b = io.loadSafetensors(join(tmp, 'cut/final/model.safetensors'));
  const la = io.loadSafetensors(join(tmp, 'straight/final/adapter/adapter_model.safetensors'));
  const lb = io.loadSafetensors(join(tmp, 'cut/final/adapter/adapter_model.safetensors'));
  let compared = 0;
  for (const [x, y] of [[a, b], [la, lb]]) {
    for (const [k, ta] of x) {
      t.deepEqual(Buffer.from(ta.data().buffer), Buffer.from(y.get(k)!.data().buffer), k);
      compared++;
    }
  }
  t.true(compared > 20);
  const losses = (dir: string) => readFileSync(join(tmp, dir, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean)
    .map((l) => JSON.parse(l)).filter((r) => r.step !== undefined && r.loss !== undefined).map((r) => [r.step, r.loss]);
  t.deepEqual(losses('cut').slice(-3), losses('straight').slice(-3));
  for (const m of [a, b, la, lb]) for (const x of m.values()) x.dispose();
});
