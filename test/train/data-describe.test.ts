// The data stream's start-of-run line gives each file's share of an epoch: a weight multiplies a file's records, so
// the shares are not the weights' ratios (the demo's warm-up once trained on 0.06% sums believing it was 10%).
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateConfig } from '../../lib/train/config.ts';
import { createDataStream } from '../../lib/train/owl-components.ts';

test('describe() gives records × weight and each file’s share of the epoch', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'owlet-describe-'));
  const row = (q: string) => JSON.stringify({ text: `A chat.\nHuman: ${q}\nAI: ok.` });
  writeFileSync(join(dir, 'few.jsonl'), Array.from({ length: 3 }, (_, i) => row(`q${i}`)).join('\n') + '\n');
  writeFileSync(join(dir, 'many.jsonl'), Array.from({ length: 30 }, (_, i) => row(`p${i}`)).join('\n') + '\n');
  const config = validateConfig({
    run: { name: 'd', out_dir: join(dir, 'run'), seed: 1, device: 'cpu' },
    model: { config: 'unused' },
    stage: { id: 0, train: ['llm'] },
    data: { train: [{ path: join(dir, 'few.jsonl'), weight: 2 }, { path: join(dir, 'many.jsonl'), weight: 1.5 }], max_length: 16, micro_batch: 2, workers: 0 },
    optimizer: { lr: 1e-3 },
    schedule: { type: 'constant', warmup_steps: 0 },
    training: { steps: 1 },
  });
  const model = { owl: { config: { mediaTokenLength: 5, vision: { imageSize: 224 }, text: { vocabSize: 32000 } }, device: 'cpu' } } as never;
  const stream = createDataStream(config, 'train', model);
  try {
    t.is(stream.describe(), 'data: few.jsonl 3 × 2 = 6 (11.8%), many.jsonl 30 × 1.5 = 45 (88.2%) per epoch');
  } finally { stream.close(); }
});
