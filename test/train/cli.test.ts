import test from 'ava';
import { spawnSync } from 'node:child_process';
import { main } from '../../lib/cli/main.ts';
import { KNOWN_SWITCHES } from '../../lib/cli/commands/doctor.ts';
import type { CliIO } from '../../lib/cli/io.ts';
import { probeCuda } from '../../lib/train/device.ts';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io, loadBatch, loadModel } from '../../lib/model/index.ts';
import { scope } from '../../lib/tensor/index.ts';
import { TOL, relMaxError } from '../helpers/tolerances.ts';
import { owlTinyDir } from '../helpers/owl-steps.ts';

async function run(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [], err: string[] = [];
  const io: CliIO = { out: (l) => out.push(l), err: (l) => err.push(l) };
  const code = await main(argv, io);
  return { code, out, err };
}

test('estimate prints the per-device memory of a stage (exit 0)', async (t) => {
  const r = await run('estimate', '--config', 'configs/stage2-7b.yaml');
  t.is(r.code, 0);
  const text = r.out.join('\n');
  t.regex(text, /total 7,123,068,928, LoRA 4,194,304/);
  t.regex(text, /gradient checkpointing on/);
  t.regex(text, /model FLOPs per optimizer step/);
  const j = await run('estimate', '--config', 'configs/stage1-7b.yaml', '--set', 'data.micro_batch=1', '--json');
  t.is(j.code, 0);
  const e = JSON.parse(j.out[0]);
  t.is(e.trainable, 384_653_312);
  t.true(e.bytes.total > e.bytes.weights);
});

test('bad usage and bad configs exit 2 with one line; missing files and pieces exit 1', async (t) => {
  const cases: [string[], number, RegExp][] = [
    [['train', '--config', 'configs/stage2-7b.yaml', '--set', 'optimizer.lr=abc'], 2, /^owlet: invalid configs\/stage2-7b\.yaml: optimizer\.lr: Invalid input: expected number, received string$/],
    [['train', '--config', 'configs/stage2-7b.yaml', '--set', 'nonsense'], 2, /^owlet: --set 'nonsense': expected key=value/],
    [['train', '--config', 'configs/stage2-7b.yaml', '--resume', '/nonexistent/ckpt'], 2, /^owlet: --resume '\/nonexistent\/ckpt': no such directory/],
    [['train'], 2, /^owlet: required option '--config <file>' not specified/],
    [['estimate', '--config', 'missing.yaml'], 2, /^owlet: cannot read config 'missing\.yaml': no such file$/],
    [['estimate', '--config', 'configs/stage2-7b.yaml', '--images-per-sample', 'x'], 2, /^owlet: --images-per-sample must be an integer/],
    [['frobnicate'], 2, /^owlet: unknown command 'frobnicate'/],
    [['dump', '--model', 'm', '--batch', 'b', '--stage', '3', '--out', 'o'], 2, /argument '3' is invalid/],
    // (on a machine without a GPU: the CUDA request fails before any weight is read, naming why)
    ...(probeCuda().devices ? [] : [[['train', '--config', 'configs/stage2-7b.yaml'], 1, /^owlet: run\.device 'cuda': the CUDA backend cannot be used here: /] as [string[], number, RegExp]]),
    [['train', '--config', 'configs/stage2-7b.yaml', '--set', 'run.device=cpu'], 1, /^owlet: checkpoints\/mplug-owl-llama-7b-pt: not found/],
    [['generate', '--checkpoint', 'x', '--prompt', 'hi'], 2, /^owlet: x: no config\.json/],
    [['eval', '--checkpoint', 'c', '--questions', 'q.jsonl', '--images', 'i', '--out', 'a.jsonl'], 2, /^owlet: c: no config\.json/],
    [['launch', '--nproc-per-node', 'two', '--', 'train', '--config', 'x'], 2, /^owlet: launch: --nproc-per-node must be a non-negative integer, got 'two'$/],
    [['launch', '--nproc-per-node', '2'], 2, /^owlet: missing required argument 'command'/],
    [['launch', '--nproc-per-node', '2', '--nnodes', '2', '--node-rank', '2', '--', 'train'], 2, /^owlet: launch: --node-rank must be an integer in \[0, 1\], got 2$/],
    [['launch', '--nproc-per-node', '2', '--', 'eval', '--checkpoint', 'c'], 2, /^owlet: launch: eval does not share its work among processes \(train does\); run it on its own$/],
    [['train', '--config', 'configs/stage2-7b.yaml', '--set', 'training.global_batch=6'], 2, /training\.global_batch: must be a multiple of data\.micro_batch \(4\)/],
    // (session 9's audit) no prototype pollution through --set; files where folders belong and the reverse
    [['train', '--config', 'configs/stage2-7b.yaml', '--set', '__proto__.polluted=1'], 2, /^owlet: --set '__proto__\.polluted=1': '__proto__' is not a config field$/],
    [['train', '--config', 'configs/stage2-7b.yaml', '--set', 'run.device=cpu', '--set', 'run.out_dir=package.json'], 2, /^owlet: run\.out_dir package\.json is a file, not a folder$/],
    [['lint-data', 'package.json', '--media-token-length', 'abc'], 2, /^owlet: --media-token-length must be a positive integer, got abc$/],
    [['lint-data', 'missing.jsonl'], 2, /^owlet: missing\.jsonl: no such file$/],
    [['lint-data', 'configs'], 2, /^owlet: configs is a folder/],
  ];
  for (const [argv, code, re] of cases) {
    const r = await run(...argv);
    t.is(r.code, code, argv.join(' '));
    t.is(r.err.length, 1, `one line for ${argv.join(' ')}: ${r.err.join(' / ')}`);
    t.regex(r.err[0] ?? '', re);
    t.false((r.err[0] ?? '').includes('\n'));
  }
});

test('help and version exit 0; doctor reports the backends', async (t) => {
  const h = await run('--help');
  t.is(h.code, 0);
  t.regex(h.out.join('\n'), /train \[options\]\s+train one stage/);
  t.is((await run('train', '--help')).code, 0);
  t.is((await run('--version')).code, 0);
  const d = await run('doctor');
  t.is(d.code, 0);
  t.regex(d.out[0], /^node v\d+\.\d+\.\d+ \(linux-x64\)/);
  t.regex(d.out[1], /^cpu backend: backend=cpu, threads=\d+/);
  t.regex(d.out[2], /^cuda backend: /);
  t.regex(d.out[3], /^switches: /);
  process.env.OWLET_GEMM_TUNE = '0';
  process.env.OWLET_GEMM_TUNNE = '0';
  try {
    t.regex((await run('doctor')).out[3], /^switches: .*OWLET_GEMM_TUNE=0 OWLET_GEMM_TUNNE=0 \(not an owlet switch: misspelt\?\)/);
  } finally {
    delete process.env.OWLET_GEMM_TUNE;
    delete process.env.OWLET_GEMM_TUNNE;
  }
  t.is(({} as Record<string, unknown>).polluted, undefined);
});

test('doctor knows every OWLET_* variable the sources read', (t) => {
  // the ways the sources read one: process.env.X / process.env['X'] (TypeScript), env_is / getenv (C++ and CUDA)
  const read = /(?:process\.env\.|process\.env\[')(OWLET_[A-Z0-9_]+)|(?:env_is|getenv)\("(OWLET_[A-Z0-9_]+)"/g;
  const found = new Set<string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) { if (e.name !== 'dist') walk(p); } else if (/\.(ts|cc|cu|cuh|h)$/.test(e.name)) {
        for (const m of readFileSync(p, 'utf8').matchAll(read)) found.add(m[1] ?? m[2]);
      }
    }
  };
  walk('lib');
  walk('native/src');
  t.true(found.size >= 15, `the scan finds the switches (${[...found].join(' ')})`);
  t.deepEqual([...found].filter((v) => !KNOWN_SWITCHES.has(v)), []);
});

test('bin/owlet.js runs the CLI through tsx with the same exit codes and one-line errors', (t) => {
  const ok = spawnSync(process.execPath, ['bin/owlet.js', 'estimate', '--config', 'configs/stage1-7b.yaml'], { encoding: 'utf8' });
  t.is(ok.status, 0, ok.stderr);
  t.regex(ok.stdout, /stage 1: training vision, queries, abstractor → 384,653,312 trainable parameters/);
  const bad = spawnSync(process.execPath, ['bin/owlet.js', 'estimate', '--config', 'configs/stage1-7b.yaml', '--set', 'stage.train=[]'], { encoding: 'utf8' });
  t.is(bad.status, 2);
  t.is(bad.stderr, 'owlet: invalid configs/stage1-7b.yaml: stage.train: Too small: expected array to have >=1 items\n');
  const debug = spawnSync(process.execPath, ['bin/owlet.js', 'estimate', '--config', 'missing.yaml'], { encoding: 'utf8', env: { ...process.env, OWLET_DEBUG: '1' } });
  t.is(debug.status, 2);
  t.regex(debug.stderr, /^owlet: cannot read config 'missing\.yaml': no such file\nConfigError: .*\n\s+at loadConfig/);
});

// owlet merge (format audit): the released checkpoints hold LoRA merged into the base weights (spec §2.1); merging the
// fixture's adapter gives a plain model whose logits are the adapter-applied ones of the official code.
const FIXTURE_DIR = owlTinyDir() ?? join(import.meta.dirname, '../../../shared/fixtures/owl-tiny');
(existsSync(join(FIXTURE_DIR, 'model.safetensors')) ? test : test.skip)('merge folds the adapter into the weights: the official LoRA logits without an adapter', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'owlet-merge-'));
  try {
    const r = await run('merge', '--checkpoint', FIXTURE_DIR, '--adapter', FIXTURE_DIR, '--out', out);
    t.is(r.code, 0, r.err.join('\n'));
    t.regex(r.out[0], /merged the adapter into 4 module\(s\)/);
    t.false(existsSync(join(out, 'adapter')));
    const m = loadModel(out);
    t.false([...m.params.keys()].some((k) => k.includes('lora_')));
    scope(() => {
      const logits = m.forward(loadBatch(join(FIXTURE_DIR, 'batch.safetensors'))).logits.toFloat32();
      const want = io.loadSafetensors(join(FIXTURE_DIR, 'forward_lora.safetensors')).get('logits')!.toFloat32();
      t.true(relMaxError(logits, want, TOL.fixture.floor) < TOL.fixture.rel);
    });
    for (const p of m.params.values()) p.dispose();
    t.is((await run('merge', '--checkpoint', out, '--out', join(out, 'x'))).code, 2, 'nothing to merge');
    t.is((await run('merge', '--checkpoint', FIXTURE_DIR, '--adapter', FIXTURE_DIR, '--out', FIXTURE_DIR)).code, 2, 'not over itself');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
