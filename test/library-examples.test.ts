// The README's promises to a library user, checked so that the docs cannot rot silently:
// - the code blocks of "The library" typecheck and run as a user writes them, `import { … } from 'owlet'`: against the
//   sources (lib/index.ts, through tsx) and against the compiled package (dist/, plain node, resolved through the
//   package's "exports"), on a tiny model and files made here under the names the example uses;
// - every name the section's prose tells a user to import (functions, error classes) is exported from the root;
// - every flag the README gives an `owlet` command exists, and the Commands block lists every flag of every command.
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as owlet from '../lib/index.ts';
import { generateDemoData, DataLoader, JsonlDataset, toTensors } from '../lib/data/index.ts';
import { io } from '../lib/model/index.ts';
import { main } from '../lib/cli/main.ts';
import type { CliIO } from '../lib/cli/io.ts';
import { validateConfig } from '../lib/train/config.ts';
import { owlComponents } from '../lib/train/owl-components.ts';
import { trainStage } from '../lib/train/stage.ts';

const root = join(import.meta.dirname, '..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const tsc = join(root, 'node_modules/typescript/bin/tsc');
const tmp = mkdtempSync(join(tmpdir(), 'owlet-readme-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

/** A `## name` section of the README, up to the next `## `. */
function section(name: string): string {
  const start = readme.indexOf(`\n## ${name}\n`);
  if (start < 0) throw new Error(`README.md has no section '## ${name}'`);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}
const codeBlocks = (text: string, lang: string) => [...text.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]);
const withoutCode = (text: string) => text.replace(/```[\s\S]*?```/g, '');

const library = section('The library');
const examples = codeBlocks(library, 'ts');

// ---- the example's files, small: what `owlet demo` would have left under these names ----

const SIZES = {
  num_query_tokens: 4,
  vision_config: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, image_size: 56, patch_size: 14 },
  visual_abstractor_config: { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 1, num_attention_heads: 2, encoder_hidden_size: 32 },
  text_config: { hidden_size: 48, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 32000 },
};
const fixtures = join(tmp, 'fixtures');

function stage2Config(model: { sizes: typeof SIZES } | { config: string; weights: string }, outDir: string, steps: number) {
  return {
    run: { name: 'readme', out_dir: outDir, seed: 1, device: 'cpu' },
    model,
    stage: { id: 2, train: ['lora', 'queries', 'abstractor'], lora: { r: 4, alpha: 8, dropout: 0.05, targets: ['q_proj', 'v_proj'] } },
    data: { train: [{ path: join(fixtures, 'data/train_instructions.jsonl') }], max_length: 48, micro_batch: 2, image: { size: 56 } },
    optimizer: { lr: 1e-3 },
    schedule: { type: 'linear', warmup_steps: 1 },
    training: { steps },
    logging: { every: 1, save_every: 0, tensorboard: false, plots: false, progress: false },
  };
}

/** checkpoints/owl (a stage-2 export), checkpoints/adapter (its PEFT adapter), batch.safetensors (the official
 *  batch keys), cat.png and configs/demo-stage2.yaml (2 steps from checkpoints/owl) — in `fixtures`. */
const made = (async () => {
  await generateDemoData({ out: join(fixtures, 'data'), trainImages: 6, evalImages: 1, imageSize: 56, system: 'Hi.' });
  const quiet = { log: () => {}, warn: () => {} };
  await trainStage(validateConfig(stage2Config({ sizes: SIZES }, join(tmp, 'train'), 2)), owlComponents(), quiet);
  cpSync(join(tmp, 'train/final'), join(fixtures, 'checkpoints/owl'), { recursive: true });
  cpSync(join(tmp, 'train/final/adapter'), join(fixtures, 'checkpoints/adapter'), { recursive: true });
  cpSync(join(fixtures, 'data/images/eval/000000.png'), join(fixtures, 'cat.png'));
  const loader = new DataLoader(JsonlDataset.load([join(fixtures, 'data/train_instructions.jsonl')]),
    { batchSize: 2, maxLength: 48, mediaTokenLength: 5, resolution: 56, mode: 'eval' });
  const b = await loader.next();
  loader.close();
  const ts = toTensors(b!);
  io.saveSafetensors(join(fixtures, 'batch.safetensors'), new Map([
    ['input_ids', ts.inputIds], ['num_images', ts.numImages], ['non_padding_mask', ts.nonPaddingMask],
    ['non_media_mask', ts.nonMediaMask], ['prompt_mask', ts.promptMask], ['pixel_values', ts.pixelValues!],
  ]));
  for (const x of Object.values(ts)) x?.dispose();
  // (YAML is a superset of JSON; relative paths are read from the working folder, as in the repository's configs)
  mkdirSync(join(fixtures, 'configs'));
  writeFileSync(join(fixtures, 'configs/demo-stage2.yaml'),
    JSON.stringify(stage2Config({ config: 'checkpoints/owl', weights: 'checkpoints/owl' }, 'runs/stage2', 2)));
})();

/** A folder to run an example in: the fixtures' files under their names, and a fresh runs/. */
function workDir(name: string): string {
  const dir = join(tmp, name);
  mkdirSync(dir);
  for (const f of ['checkpoints', 'configs', 'batch.safetensors', 'cat.png']) symlinkSync(join(fixtures, f), join(dir, f));
  return dir;
}

/** The types a TypeScript user of the root's functions names: their options and results, configs, errors. */
const USER_TYPES = `import type {
  OwletConfig, OwletConfigInput, OwlConfig, AdapterConfig, LoadModelOptions, ForwardResult, OwlBatch, MplugOwl,
  GenerateOptions, GenerateRequest, SamplingOptions, OwlEvalQuestion, OwlEvalAnswer, OwlEvalOptions, Tokenizer, OwlTrainBatch,
  EncodeOptions, TrainStageOptions, StageResult, Components, TrainerOptions, LoaderOptions, DataSource, PreprocessOptions,
  ImageSource, LintOptions, LintReport, DemoDataOptions, DemoFiles, DemoOptions, DemoReport, DumpOptions, MemoryEstimate,
  LaunchOptions, DistEnv, ProcessGroup, ProcessGroupOptions, Tensor, OwletError, ConfigError, CheckpointError,
} from 'owlet';
export type All = [OwletConfig, OwletConfigInput, OwlConfig, AdapterConfig, LoadModelOptions, ForwardResult, OwlBatch,
  MplugOwl, GenerateOptions, GenerateRequest, SamplingOptions, OwlEvalQuestion, OwlEvalAnswer, OwlEvalOptions, Tokenizer,
  EncodeOptions, TrainStageOptions, StageResult, Components<OwlTrainBatch>, TrainerOptions<OwlTrainBatch>, LoaderOptions,
  DataSource, PreprocessOptions, ImageSource, LintOptions, LintReport, DemoDataOptions, DemoFiles, DemoOptions, DemoReport,
  DumpOptions, MemoryEstimate, LaunchOptions, DistEnv, ProcessGroup, ProcessGroupOptions, Tensor, OwletError, ConfigError,
  CheckpointError];
`;

/** A user's project: ESM, a strict tsconfig, the example as app.ts; `owlet` resolved by `paths` or node_modules. */
function project(name: string, example: string, compilerOptions: Record<string, unknown>): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'nodenext', strict: true, skipLibCheck: true, ...compilerOptions },
    files: ['app.ts', 'types.ts'],
  }));
  writeFileSync(join(dir, 'app.ts'), example);
  writeFileSync(join(dir, 'types.ts'), USER_TYPES);
  return dir;
}

function typecheck(t: { fail(m: string): void }, dir: string): boolean {
  const r = spawnSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf8' });
  if (r.status !== 0) t.fail(`the README's example (or the types a user names, types.ts) does not compile:\n${r.stdout}${r.stderr}`);
  return r.status === 0;
}

function runExample(t: { is(a: unknown, b: unknown, m?: string): void }, args: string[], cwd: string) {
  const r = spawnSync(process.execPath, args, { cwd, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' }, timeout: 240_000 });
  t.is(r.status, 0, `the README's example failed:\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-4000)}`);
  return r;
}

test('the README has the library example', (t) => {
  t.is(examples.length, 1);
  t.regex(examples[0], /from 'owlet';/);
});

test('the library example compiles against lib/index.ts and runs through tsx', async (t) => {
  const dir = project('src-user', examples[0], {
    noEmit: true, allowImportingTsExtensions: true, paths: { owlet: [join(root, 'lib/index.ts')] },
    lib: ['ES2023', 'ESNext.Disposable'], types: ['node'], typeRoots: [join(root, 'node_modules/@types')],
  });
  if (!typecheck(t, dir)) return;
  await made;
  const app = join(dir, 'run.ts');
  writeFileSync(app, examples[0].replace(/from 'owlet'/g, `from ${JSON.stringify(join(root, 'lib/index.ts'))}`));
  runExample(t, ['--import', import.meta.resolve('tsx'), app], workDir('run-src'));
});

test('the library example compiles against the built package (dist/, its "exports") and runs in plain node', async (t) => {
  // The package as npm installs it: package.json and dist/ (built here), the addon and dependencies beside them.
  const pkg = join(tmp, 'pkg');
  mkdirSync(pkg);
  cpSync(join(root, 'package.json'), join(pkg, 'package.json'));
  for (const d of ['node_modules', 'build']) symlinkSync(join(root, d), join(pkg, d));
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', join(pkg, 'dist')], { stdio: 'pipe' });
  // (types: [] — the README promises that skipLibCheck alone is enough, without @types/node)
  const dir = project('dist-user', examples[0], { outDir: 'out', types: [] });
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(pkg, join(dir, 'node_modules/owlet'));
  if (!typecheck(t, dir)) return;
  await made;
  runExample(t, [join(dir, 'out/app.js')], workDir('run-dist'));
});

test('every name the library section tells a user to import is exported from the package root', (t) => {
  const exported = new Set(Object.keys(owlet));
  const imports = examples.flatMap((e) => [...e.matchAll(/import \{([^}]*)\} from 'owlet'/g)]
    .flatMap((m) => m[1].split(',').map((s) => s.trim()).filter(Boolean)));
  t.true(imports.length > 5);
  for (const name of imports) t.true(exported.has(name), `${name} is imported from 'owlet' in the README but not exported`);
  // The prose: `name()` / `name(args)` and `SomethingError`; a name that is not exported must be a method of a
  // Tensor or a queued read (`data()`, `take()`), and `Class.method(…)` a method of an exported class.
  const methods = new Set([...Object.getOwnPropertyNames(owlet.Tensor.prototype), ...Object.getOwnPropertyNames(owlet.QueuedRead.prototype)]);
  const named = [...withoutCode(library).matchAll(/`([A-Za-z_]\w*)(?:\.(\w+))?(\([^`]*\))?`/g)]
    .filter((m) => m[3] || (!m[2] && /Error$/.test(m[1])));
  t.true(named.length > 8);
  for (const [text, name, method] of named) {
    if (method) {
      const cls = (owlet as Record<string, unknown>)[name] as { prototype?: object } | undefined;
      t.true(!!cls?.prototype && method in cls.prototype, `${text}: not a method of an exported class`);
    } else {
      t.true(exported.has(name) || methods.has(name), `${text} is named in the README's library section but not exported`);
    }
  }
  // the error classes: each an OwletError with a code
  for (const [, name] of named.filter((m) => /Error$/.test(m[1]))) {
    const E = (owlet as Record<string, unknown>)[name] as new (m: string) => owlet.OwletError;
    const e = new E('x');
    t.true(e instanceof owlet.OwletError && typeof e.code === 'string', name);
  }
});

// ---- the command line ----

async function help(command: string): Promise<string> {
  const out: string[] = [];
  const cliIO: CliIO = { out: (l) => out.push(l), err: (l) => out.push(l) };
  t0(await main(command ? [command, '--help'] : ['--help'], cliIO) === 0, `owlet ${command} --help failed: ${out.join('\n')}`);
  return out.join('\n');
}
function t0(ok: boolean, message: string) { if (!ok) throw new Error(message); }
const flagsOf = (text: string) => new Set([...text.matchAll(/(?<![\w-])--[a-z][a-z-]*/g)].map((m) => m[0]));

test('the Commands block lists every command with all its flags, and no flag the command lacks', async (t) => {
  const block = codeBlocks(section('Commands'), '').join('\n');
  const usage = new Map<string, string>();
  let current = '';
  for (const line of block.split('\n')) {
    const m = /^owlet ([a-z-]+)/.exec(line);
    if (m) current = m[1];
    // (the text after a usage runs in a column of its own; a continuation line starts indented)
    const args = line.replace(/^\s*(owlet [a-z-]+)?/, '').split(/\s{3,}/)[0];
    if (current) usage.set(current, `${usage.get(current) ?? ''} ${args}`);
  }
  const root = await help('');
  const commands = [...root.split('Commands:')[1].matchAll(/^ {2}([a-z-]+)/gm)].map((m) => m[1]).filter((c) => c !== 'help');
  t.deepEqual([...usage.keys()].sort(), commands.sort(), 'the Commands block and `owlet --help` list the same commands');
  for (const c of commands) {
    const has = flagsOf((await help(c)).split('Options:')[1]);
    has.delete('--help');
    const documented = flagsOf((usage.get(c) ?? '').split(' -- ')[0]);
    t.deepEqual([...documented].filter((f) => !has.has(f)), [], `owlet ${c}: flags in the README that the command lacks`);
    t.deepEqual([...has].filter((f) => !documented.has(f)), [], `owlet ${c}: flags the README's Commands block does not list`);
  }
});

test('every `owlet <command> --flag` written anywhere in the README exists', async (t) => {
  const known = new Map<string, Set<string>>();
  let checked = 0;
  // (a command runs to the end of its line or of its `code span`; what follows ` -- ` is launch's rank command)
  for (const m of readme.matchAll(/owlet ([a-z][a-z-]*)([^`\n]*)/g)) {
    const [, command, rest] = m;
    if (!known.has(command)) {
      const out: string[] = [];
      const code = await main([command, '--help'], { out: (l) => out.push(l), err: (l) => out.push(l) });
      known.set(command, code === 0 ? flagsOf(out.join('\n').split('Options:')[1] ?? '') : new Set());
      if (code !== 0) continue; // prose such as "owlet reads …", not a command
    }
    const has = known.get(command)!;
    if (!has.size) continue;
    for (const flag of flagsOf(rest.split(' -- ')[0])) {
      t.true(has.has(flag), `README: \`owlet ${command}${rest}\`: owlet ${command} has no ${flag}`);
      checked++;
    }
  }
  t.true(checked > 20, `only ${checked} flags found`);
});
