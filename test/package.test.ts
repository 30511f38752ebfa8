// The compiled package (dist/, npm run build:js): what a program that imports 'owlet' without a TypeScript loader
// gets (library audit of session 10: the package pointed at its .ts sources, which plain Node cannot load). Built
// fresh here into a temporary folder, then imported by plain node: a forward and backward, a typed error, and the
// data loader's worker threads (their entry is the compiled worker, not the .ts one).
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const tmp = mkdtempSync(join(tmpdir(), 'owlet-dist-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

test('the compiled package runs in plain node: exports, typed errors, the loader\'s workers', (t) => {
  const out = join(root, 'dist-test');
  try {
    execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', out], { stdio: 'pipe' });
    t.regex(readFileSync(join(out, 'index.js'), 'utf8'), /from '\.\/tensor\/index\.js'/, 'relative imports rewritten to .js');
    t.truthy(readFileSync(join(out, 'index.d.ts'), 'utf8'));
    const script = join(tmp, 'use.mjs');
    writeFileSync(script, `
      import { zeros, scope, matmul, loadModel, ConfigError, generateDemoData, JsonlDataset, DataLoader } from ${JSON.stringify(join(out, 'index.js'))};
      import { readdirSync } from 'node:fs';
      const r = scope(() => Array.from(matmul(zeros([2, 3]), zeros([3, 4])).toFloat32()));
      let typed = false;
      try { loadModel(${JSON.stringify(join(tmp, 'none'))}); } catch (e) { typed = e instanceof ConfigError; }
      await generateDemoData({ out: ${JSON.stringify(join(tmp, 'data'))}, trainImages: 2, evalImages: 1, imageSize: 28, system: 'Hi.' });
      const f = readdirSync(${JSON.stringify(join(tmp, 'data'))}).find((x) => x.startsWith('train_captions'));
      const l = new DataLoader(JsonlDataset.load([${JSON.stringify(join(tmp, 'data'))} + '/' + f]),
        { batchSize: 2, maxLength: 32, mediaTokenLength: 5, resolution: 28, mode: 'train', seed: 1, workers: 1 });
      const b = await l.next();
      l.close();
      console.log(JSON.stringify({ sum: r.length, typed, images: b.pixelValues.length }));
    `);
    const run = spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
    t.is(run.status, 0, run.stderr);
    t.deepEqual(JSON.parse(run.stdout.trim().split('\n').pop()!), { sum: 8, typed: true, images: 2 * 3 * 28 * 28 });
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
