// scripts/gpu/run.sh's smoke stage runs the GPU cases of the kernels no GPU has run yet through check.mjs --filter:
// if a case's label changed, the filter would match nothing and the stage would "pass" having checked nothing. This
// keeps the filter (read out of run.sh) and the case names (scripts/gpu/cases.ts) in step.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { cases } from '../scripts/gpu/cases.ts';

test('the smoke filter in run.sh matches every case of the three new kernels, and only those', (t) => {
  const m = /^SMOKE_FILTER='([^']+)'$/m.exec(readFileSync('scripts/gpu/run.sh', 'utf8'));
  t.truthy(m, 'run.sh sets the smoke stage\'s filter (SMOKE_FILTER)');
  const alternatives = m![1].split('|');
  const names = cases().map((c) => c.name);
  const matched = names.filter((n) => alternatives.some((a) => n.includes(a)));
  const ws = names.filter((n) => n.includes('(bwd wgmma-ws)'));
  const lora = names.filter((n) => /^lora .*\((fused|fusedl|fused3|fusedwarp|fused\+overlap|fusedl\+overlap|fused\+ring|fusedl\+ring|fused\+ring\+split|fusedl\+ring\+split|fused\+overlap\+split|gypass|fused\+gypass)\)$/.test(n));
  t.true(ws.length >= 18, `wgmma-ws attention cases: ${ws.length}`);
  t.true(lora.length >= 13, `fused / gypass LoRA cases: ${lora.length}`);
  t.deepEqual(new Set(matched), new Set([...ws, ...lora]));
});
