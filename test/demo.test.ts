// The demo end to end at a tiny scale: every stage trains, exports, and the report, metrics, plots and the stage-2
// checkpoint exist and load; `owlet generate` answers from that checkpoint. (The full-size demo runs in minutes and
// is measured in bench/, not here.)
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDemo } from '../lib/demo/index.ts';
import { main } from '../lib/cli/main.ts';
import { liveTensors } from '../lib/tensor/index.ts';

test('owlet demo runs every stage and writes a usable stage-2 checkpoint', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'owlet-demo-'));
  try {
    const live = liveTensors();
    const lines: string[] = [];
    const r = await runDemo({ out, stepScale: 0.01, trainImages: 24, evalImages: 4, evalLimit: 4, log: (l) => lines.push(l) });
    t.is(liveTensors(), live, 'the demo leaked tensors');
    for (const f of ['report.json', 'report.txt', 'warmup/final/model.safetensors', 'stage1/final/config.json',
      'stage2/final/adapter/adapter_model.safetensors', 'stage2/final/adapter/adapter_config.json', 'stage2/metrics.jsonl']) {
      t.true(existsSync(join(out, f)), f);
    }
    t.true(lines.some((l) => l.includes('question accuracy after stage 2')));
    t.is(typeof r.questions.all_questions?.accuracy, 'number');
    t.true(r.machine.threads > 0 && r.machine.blas.length > 0, 'the report says where it ran');
    t.true(lines.some((l) => l.startsWith('  machine: ')));
    t.true(readFileSync(join(out, 'stage2/metrics.jsonl'), 'utf8').split('\n').filter(Boolean).length > 0);
    const said: string[] = [];
    const code = await main(['generate', '--checkpoint', join(out, 'stage2/final'), '--image', join(out, 'data/images/eval/000000.png'),
      '--prompt', 'How many shapes are there?', '--temperature', '0', '--max-new-tokens', '4'],
    { out: (s) => said.push(s), err: (s) => said.push(s) });
    t.is(code, 0, said.join('\n'));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
