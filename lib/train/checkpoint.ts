// Complete, self-describing checkpoints, written atomically.
//
// A checkpoint is a directory `ckpt-<step>` under the run's checkpoints/ folder holding the resolved config, the
// trainer state (stage, step, RNG, data position, skip count), the trainable weights and the optimizer state
// (safetensors through the injected TensorFileIO), the metrics so far, and last a manifest.json listing every file's
// size and sha256. It is built in `ckpt-<step>.tmp`, every file and the directory are fsync'ed, and only then is it
// renamed into place (and the parent fsync'ed), so a crash at any moment leaves either the complete new checkpoint or
// none; the previous one is untouched until the new one is complete and is pruned (keep-last-N) only afterwards.
// `latest` names the newest checkpoint and is replaced atomically. Resume never trusts names alone: it takes the
// newest directory whose manifest verifies and skips *.tmp leftovers.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join, basename } from 'node:path';
import type { Tensor } from '../tensor/index.ts';
import { CheckpointError } from './errors.ts';
import { fsyncPath, sha256File, writeFileAtomic, writeFileDurable } from './fsutil.ts';
import type { Json, OptimizerState, TensorFileIO } from './types.ts';

export const CHECKPOINT_FORMAT = 'owlet-checkpoint';
export const CHECKPOINT_VERSION = 1;

export interface TrainerStateJson {
  step: number;
  stage: number;
  /** RNG states by owner (trainer, …). */
  rng: Json;
  /** The data stream's position. */
  data: Json;
  skippedSteps: number;
  optimizer: Json;
  [k: string]: Json;
}

export interface CheckpointPayload {
  step: number;
  stage: number;
  config: Json;
  weights: Map<string, Tensor>;
  optimizer: OptimizerState;
  rng: Json;
  data: Json;
  skippedSteps: number;
  metrics: Json;
}

export interface LoadedCheckpoint extends CheckpointPayload { path: string }

interface ManifestFile { bytes: number; sha256: string }
export interface Manifest {
  format: string;
  version: number;
  step: number;
  stage: number;
  created: string;
  files: Record<string, ManifestFile>;
}

/** Points in a save where a test can inject a failure or a kill. */
export type SavePoint = `file:${string}` | 'manifest' | 'renamed' | 'latest';

export interface CheckpointManagerOptions {
  keepLast?: number;
  /** Called after each durable step of a save (tests: throw, or SIGKILL the process, there). */
  onSavePoint?: (point: SavePoint) => void | Promise<void>;
}

const NAME = /^ckpt-(\d+)$/;
const FILES = { config: 'config.json', state: 'trainer_state.json', weights: 'weights.safetensors',
  optimizer: 'optimizer.safetensors', metrics: 'metrics.json', manifest: 'manifest.json' } as const;

export type Verification = { ok: true; manifest: Manifest } | { ok: false; reason: string };

/** Checks that a checkpoint directory is complete: the manifest parses and every listed file has its size and hash. */
export async function verifyCheckpoint(dir: string): Promise<Verification> {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(readFileSync(join(dir, FILES.manifest), 'utf8')) as Manifest;
  } catch (e) {
    return { ok: false, reason: `no readable manifest.json (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
  // (a manifest of valid JSON that is not one — `null`, a list — stopped the run on an internal TypeError instead of
  // letting a resume skip the checkpoint)
  if (!isObject(manifest)) return { ok: false, reason: 'manifest.json is not a JSON object' };
  if (manifest.format !== CHECKPOINT_FORMAT || manifest.version !== CHECKPOINT_VERSION) {
    return { ok: false, reason: `not an ${CHECKPOINT_FORMAT} v${CHECKPOINT_VERSION} manifest` };
  }
  const m = NAME.exec(basename(dir));
  if (m && Number(m[1]) !== manifest.step) return { ok: false, reason: `directory name says step ${m[1]}, manifest ${manifest.step}` };
  for (const required of [FILES.config, FILES.state, FILES.weights, FILES.optimizer, FILES.metrics]) {
    if (!manifest.files?.[required]) return { ok: false, reason: `manifest does not list ${required}` };
  }
  for (const [name, f] of Object.entries(manifest.files)) {
    if (!isObject(f) || !Number.isInteger(f.bytes) || typeof f.sha256 !== 'string') return { ok: false, reason: `manifest entry of ${name} is not { bytes, sha256 }` };
    if (name !== basename(name) || name === '..' || name === '.') return { ok: false, reason: `manifest lists ${name}, not a file of the checkpoint` };
    const p = join(dir, name);
    let size: number;
    try { size = statSync(p).size; } catch { return { ok: false, reason: `${name} is missing` }; }
    if (size !== f.bytes) return { ok: false, reason: `${name} has ${size} bytes, the manifest says ${f.bytes}` };
    if ((await sha256File(p)) !== f.sha256) return { ok: false, reason: `${name} does not match its sha256` };
  }
  return { ok: true, manifest };
}

export class CheckpointManager {
  readonly root: string;
  private readonly keepLast: number;
  private readonly onSavePoint?: (point: SavePoint) => void | Promise<void>;

  constructor(root: string, private readonly io: TensorFileIO, o: CheckpointManagerOptions = {}) {
    this.root = root;
    this.keepLast = o.keepLast ?? 3;
    if (!Number.isInteger(this.keepLast) || this.keepLast < 1) throw new CheckpointError(`keep_last must be >= 1, got ${o.keepLast}`);
    this.onSavePoint = o.onSavePoint;
  }

  /** Complete-looking checkpoint directories (named ckpt-N, not *.tmp), newest first. Not yet verified. */
  list(): { step: number; path: string }[] {
    if (!existsSync(this.root)) return [];
    return readdirSync(this.root, { withFileTypes: true })
      .filter((d) => d.isDirectory() && NAME.test(d.name))
      .map((d) => ({ step: Number(NAME.exec(d.name)![1]), path: join(this.root, d.name) }))
      .sort((a, b) => b.step - a.step);
  }

  /** The newest checkpoint that verifies, or null. Reports what it skipped through `warn`. */
  async findLatest(warn: (msg: string) => void = () => {}): Promise<string | null> {
    for (const c of this.list()) {
      const v = await verifyCheckpoint(c.path);
      if (v.ok) return c.path;
      warn(`skipping checkpoint ${c.path}: ${v.reason}`);
    }
    return null;
  }

  /**
   * Checkpoints newer than `step` (where a run starts): a damaged one (it fails verification, so no resume can use it)
   * is moved aside to ckpt-N.damaged[-K], kept for inspection, and reported through `warn`; the intact ones are
   * returned.
   */
  async newerIntact(step: number, warn: (msg: string) => void): Promise<{ step: number; path: string }[]> {
    const intact: { step: number; path: string }[] = [];
    for (const c of this.list().filter((x) => x.step > step)) {
      const v = await verifyCheckpoint(c.path);
      if (v.ok) { intact.push(c); continue; }
      let aside = `${c.path}.damaged`;
      for (let k = 2; existsSync(aside); k++) aside = `${c.path}.damaged-${k}`;
      renameSync(c.path, aside);
      warn(`moved the damaged checkpoint ${c.path} aside to ${aside} (${v.reason})`);
    }
    return intact;
  }

  /** The checkpoint `latest` names (informational: resume still verifies), or null. */
  latestPointer(): string | null {
    try {
      const name = readFileSync(join(this.root, 'latest'), 'utf8').trim();
      return NAME.test(name) ? join(this.root, name) : null;
    } catch { return null; }
  }

  async save(p: CheckpointPayload): Promise<string> {
    try {
      return await this.write(p);
    } catch (e) {
      // A file system that fails the save (full disk, quota, read-only) used to surface as a bare "ENOSPC: no space
      // left on device, write": say which save failed, clean its partial copy off the full disk, and what survives.
      const code = (e as NodeJS.ErrnoException).code;
      if (typeof code !== 'string' || !code.startsWith('E')) throw e;
      rmSync(join(this.root, `ckpt-${p.step}.tmp`), { recursive: true, force: true });
      const kept = this.list()[0];
      throw new CheckpointError(`saving checkpoint ckpt-${p.step} in ${this.root} failed: ${(e as Error).message}; ` +
        (kept ? `${basename(kept.path)} is intact (resume from it with --resume auto)` : 'no earlier checkpoint exists'));
    }
  }

  private async write(p: CheckpointPayload): Promise<string> {
    if (!Number.isInteger(p.step) || p.step < 0) throw new CheckpointError(`checkpoint step must be an integer >= 0, got ${p.step}`);
    mkdirSync(this.root, { recursive: true });
    const name = `ckpt-${p.step}`;
    const final = join(this.root, name);
    const tmp = `${final}.tmp`;
    rmSync(tmp, { recursive: true, force: true }); // a leftover of a killed save of the same step
    mkdirSync(tmp);
    const point = async (s: SavePoint) => { if (this.onSavePoint) await this.onSavePoint(s); };

    const state: TrainerStateJson = { step: p.step, stage: p.stage, rng: p.rng, data: p.data,
      skippedSteps: p.skippedSteps, optimizer: p.optimizer.meta };
    const jsonFiles: [string, Json][] = [[FILES.config, p.config], [FILES.state, state]];
    for (const [file, value] of jsonFiles) {
      writeFileDurable(join(tmp, file), JSON.stringify(value, null, 1) + '\n');
      await point(`file:${file}`);
    }
    for (const [file, tensors] of [[FILES.weights, p.weights], [FILES.optimizer, p.optimizer.tensors]] as const) {
      await this.io.save(join(tmp, file), tensors, { format: CHECKPOINT_FORMAT, step: String(p.step) });
      fsyncPath(join(tmp, file));
      await point(`file:${file}`);
    }
    writeFileDurable(join(tmp, FILES.metrics), JSON.stringify(p.metrics) + '\n');
    await point(`file:${FILES.metrics}`);

    const files: Record<string, ManifestFile> = {};
    for (const f of [FILES.config, FILES.state, FILES.weights, FILES.optimizer, FILES.metrics]) {
      const path = join(tmp, f);
      files[f] = { bytes: statSync(path).size, sha256: await sha256File(path) };
    }
    const manifest: Manifest = { format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, step: p.step, stage: p.stage,
      created: new Date().toISOString(), files };
    writeFileDurable(join(tmp, FILES.manifest), JSON.stringify(manifest, null, 1) + '\n');
    fsyncPath(tmp);
    await point('manifest');

    // Same step saved again (e.g. a final save right after a periodic one): move the old one aside first, so the
    // rename below cannot fail and a crash between the two renames still leaves a complete copy (the .tmp-suffixed
    // old one is ignored by resume, the new one is complete).
    if (existsSync(final)) {
      const aside = `${final}.replaced.tmp`;
      rmSync(aside, { recursive: true, force: true });
      renameSync(final, aside);
      renameSync(tmp, final);
      fsyncPath(this.root);
      rmSync(aside, { recursive: true, force: true });
    } else {
      renameSync(tmp, final);
      fsyncPath(this.root);
    }
    await point('renamed');
    writeFileAtomic(join(this.root, 'latest'), name + '\n');
    await point('latest');
    this.prune(p.step);
    return final;
  }

  /** Keeps the newest keepLast complete checkpoints (never the one just written) and drops stale *.tmp folders. */
  private prune(justWritten: number): void {
    const all = this.list();
    for (const c of all.slice(this.keepLast)) if (c.step !== justWritten) rmSync(c.path, { recursive: true, force: true });
    for (const d of readdirSync(this.root, { withFileTypes: true })) {
      if (d.isDirectory() && /^ckpt-\d+(\.replaced)?\.tmp$/.test(d.name)) rmSync(join(this.root, d.name), { recursive: true, force: true });
    }
  }

  /** Loads a checkpoint after verifying it. */
  async load(dir: string): Promise<LoadedCheckpoint> {
    const v = await verifyCheckpoint(dir);
    if (!v.ok) throw new CheckpointError(`checkpoint ${dir} is not usable: ${v.reason}`);
    const state = readCheckpointJson(dir, FILES.state) as TrainerStateJson;
    if (!isObject(state) || state.step !== v.manifest.step || !Number.isInteger(state.stage)) {
      throw new CheckpointError(`checkpoint ${dir} is not usable: ${FILES.state} does not hold the step ${v.manifest.step} and the stage ` +
        'its manifest names (edited or written by something else than owlet)');
    }
    const config = readCheckpointJson(dir, FILES.config);
    const metrics = readCheckpointJson(dir, FILES.metrics);
    if (!isObject(metrics) || (metrics.history !== undefined && !Array.isArray(metrics.history))) {
      throw new CheckpointError(`checkpoint ${dir} is not usable: ${FILES.metrics} does not hold a list of steps (history)`);
    }
    const weights = await this.io.load(join(dir, FILES.weights));
    let optTensors: Map<string, Tensor>;
    try {
      optTensors = await this.io.load(join(dir, FILES.optimizer));
    } catch (e) { // (the weights just read were kept — every trained weight, once per failed resume attempt)
      for (const t of weights.values()) t.dispose();
      throw e;
    }
    return { path: dir, step: state.step, stage: state.stage, config, weights, rng: state.rng, data: state.data,
      skippedSteps: state.skippedSteps, metrics, optimizer: { meta: state.optimizer, tensors: optTensors } };
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * One of a checkpoint's JSON files, parsed. Its hash matches the manifest's when it comes to this (verified first),
 * so a file that does not parse was edited or written by another tool: said with the file's name, where a bare
 * "Unexpected end of JSON input" named nothing.
 */
export function readCheckpointJson(dir: string, file: string): Json {
  const path = join(dir, file);
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (e) {
    throw new CheckpointError(`checkpoint ${dir} is not usable: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try { return JSON.parse(text) as Json; } catch (e) {
    throw new CheckpointError(`checkpoint ${dir} is not usable: ${file} is not valid JSON (${(e as Error).message})`);
  }
}

/** True when `dir` is itself a checkpoint (has a manifest), not a folder of checkpoints. */
export function isCheckpointDir(dir: string): boolean { return existsSync(join(dir, FILES.manifest)); }

/**
 * `--resume auto`: the newest complete checkpoint under `root`, or null for a fresh start. `--resume DIR`: DIR itself
 * when it is a checkpoint (it must verify), or the newest complete one inside it when it is a folder of checkpoints.
 */
export async function resolveResume(root: string, spec: string, warn?: (m: string) => void): Promise<string | null> {
  if (spec === 'auto') return new CheckpointManager(root, nullIO).findLatest(warn);
  if (!existsSync(spec)) throw new CheckpointError(`--resume ${spec}: no such directory`);
  if (!statSync(spec).isDirectory()) throw new CheckpointError(`--resume ${spec} is a file; give a run folder, a checkpoints folder or a ckpt-N folder (or auto)`);
  if (isCheckpointDir(spec)) {
    const v = await verifyCheckpoint(spec);
    if (!v.ok) throw new CheckpointError(`--resume ${spec}: ${v.reason}`);
    return spec;
  }
  const inner = existsSync(join(spec, 'checkpoints')) ? join(spec, 'checkpoints') : spec;
  const found = await new CheckpointManager(inner, nullIO).findLatest(warn);
  if (!found) throw new CheckpointError(`--resume ${spec}: no complete checkpoint in ${inner}`);
  return found;
}

const nullIO: TensorFileIO = {
  save() { throw new CheckpointError('internal: this manager only reads'); },
  load() { throw new CheckpointError('internal: this manager only reads'); },
};
