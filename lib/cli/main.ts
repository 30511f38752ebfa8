// The owlet command line: a thin layer over the programmatic API. Exit codes: 0 ok, 2 bad usage or config, 1 failure.
// Errors print one line (`owlet: …`) unless OWLET_DEBUG=1, which adds the stack.
import { Command, CommanderError, Option } from 'commander';
import { ConfigError, UsageError } from '../train/errors.ts';
import { doctorCommand } from './commands/doctor.ts';
import { estimateCommand } from './commands/estimate.ts';
import { dumpCommand } from './commands/dump.ts';
import { lintCommand } from './commands/lint.ts';
import { demoCommand } from './commands/demo.ts';
import { generateCommand, evalCommand } from './commands/generate.ts';
import { LaunchError } from '../dist/launch.ts';
import { exitWithLauncher } from '../dist/env.ts';
import { launchCommand } from './commands/launch.ts';
import { trainCommand } from './commands/train.ts';
import { mergeCommand } from './commands/merge.ts';
import { processIO, surviveClosedOutput, type CliIO } from './io.ts';

const collect = (v: string, prev: string[]) => [...prev, v];
// generate's and eval's (a fresh Option each: commander keeps state in it)
const chunkingOption = () => new Option('--chunking <how>', 'how the prompt is encoded: as in training (each marker a chunk ' +
  'of its own, earlier answers ending in EOS) or as the official inference processor (split only at <image>)')
  .choices(['training', 'official']).default('training');

/** Why a run ended, as an exit code. */
export function exitCodeOf(e: unknown): number {
  if (e instanceof LaunchError) return e.exitCode;
  if (e instanceof ConfigError || e instanceof UsageError) return 2;
  if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
  return 1;
}

function build(io: CliIO, failed: { code: number }): Command {
  const program = new Command('owlet')
    .enablePositionalOptions()
    .description('Train, evaluate and run mPLUG-Owl (CLIP ViT → visual abstractor → LLaMA + LoRA)')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.out(s.replace(/\n$/, '')),
      writeErr: (s) => io.err(s.replace(/\n$/, '')),
      // commander's usage errors as one line, like every other error
      outputError: (s, write) => write(`owlet: ${s.replace(/^error: /, '').trim().split('\n').join(' ')} (see owlet --help)\n`),
    });

  program.command('train').description('train one stage from a YAML config')
    .requiredOption('--config <file>', 'run configuration (YAML)')
    .option('--set <key=value>', 'override a config field (dotted path, YAML value); repeatable', collect, [])
    .option('--resume <auto|dir>', "continue from the newest complete checkpoint ('auto') or from a checkpoint directory")
    .option('--no-progress', 'no progress bar')
    .action(async (o) => { failed.code = await trainCommand({ config: o.config, set: o.set, resume: o.resume, progress: o.progress === false ? false : undefined }, io); });

  program.command('estimate').description('per-device memory (and FLOPs) a stage needs, from its config')
    .requiredOption('--config <file>', 'run configuration (YAML)')
    .option('--set <key=value>', 'override a config field; repeatable', collect, [])
    .option('--images-per-sample <n>', 'images per training sample', '1')
    .option('--json', 'machine-readable output')
    .action((o) => estimateCommand({ config: o.config, set: o.set, imagesPerSample: o.imagesPerSample, json: o.json }, io));

  program.command('demo').description('the built-in demo: text warm-up → stage 1 → stage 2 → evaluation (on the CPU unless --device)')
    .option('--out <dir>', 'output folder', 'runs/demo')
    .addOption(new Option('--device <device>', 'where to train').choices(['cpu', 'cuda', 'auto']).default('cpu'))
    .action((o) => demoCommand(o, io));

  program.command('generate').description('answer a prompt about images with a trained checkpoint')
    .requiredOption('--checkpoint <dir>', 'model or stage-2 checkpoint directory')
    .option('--image <file>', 'an image for an <image> placeholder; repeatable', collect, [])
    .requiredOption('--prompt <text>', 'the question (wrapped in the official template)')
    .option('--max-new-tokens <n>', 'tokens to generate at most', '512')
    .option('--temperature <t>', 'sampling temperature (0: greedy)', '1.0')
    .option('--top-k <k>', 'sample among the k most likely tokens', '3')
    .option('--top-p <p>', 'nucleus sampling mass', '1.0')
    .option('--seed <n>', 'sampling seed', '0')
    .option('--system <text>', "the template's system line (default: the checkpoint's, else the official one)")
    .addOption(chunkingOption())
    .action((o) => generateCommand(o, io));

  program.command('eval').description('answer OwlEval-style questions (questions.jsonl) into answers.jsonl')
    .requiredOption('--checkpoint <dir>', 'checkpoint directory')
    .requiredOption('--questions <file>', 'questions.jsonl (image, question_id, question)')
    .requiredOption('--images <dir>', 'folder the image fields point into')
    .requiredOption('--out <file>', 'answers.jsonl to write')
    .option('--model-id <id>', 'model_id field of the answers', 'owlet')
    .option('--max-new-tokens <n>', 'tokens to generate at most', '256')
    .option('--temperature <t>', 'sampling temperature (0: greedy)', '0')
    .option('--system <text>', "the template's system line (default: the checkpoint's, else the official one)")
    .addOption(chunkingOption())
    .action((o) => evalCommand(o, io));

  program.command('dump').description('run one batch and dump activations/gradients (parity checks)')
    .requiredOption('--model <dir>', 'model directory (official layout)')
    .option('--adapter <dir>', 'PEFT adapter directory')
    .requiredOption('--batch <file>', 'batch.safetensors in the official training format')
    .addOption(new Option('--stage <n>', 'which parameters get gradients').choices(['1', '2']).makeOptionMandatory())
    .requiredOption('--out <file>', 'output .safetensors')
    .action((o) => dumpCommand(o, io));

  program.command('merge').description('fold a LoRA adapter into its base weights: a plain model directory (the released form)')
    .requiredOption('--checkpoint <dir>', 'model directory (e.g. runs/x/final)')
    .option('--adapter <dir>', 'PEFT adapter directory (default: the checkpoint\'s adapter/)')
    .requiredOption('--out <dir>', 'where the merged model goes')
    .addOption(new Option('--dtype <dtype>', 'dtype of the written weights (default: as saved)').choices(['f32', 'bf16']))
    .action((o) => mergeCommand(o, io));

  program.command('lint-data').description('check instruction-data JSONL files (fields, <image> counts, images, lengths)')
    .argument('<files...>', 'JSONL files')
    .option('--images-dir <dir>', 'folder relative image paths point into')
    .option('--max-length <n>', 'report samples longer than this many tokens (default 2048)')
    .option('--media-token-length <n>', 'ids per image (default 65)')
    .action(async (files, o) => { if (!(await lintCommand({ files, ...o }, io))) failed.code = 1; });

  program.command('launch').description('start one owlet process per device (torchrun-style environment)')
    .requiredOption('--nproc-per-node <n>', 'processes on this node')
    .option('--nnodes <n>', 'nodes', '1')
    .option('--node-rank <r>', 'this node', '0')
    .option('--master-addr <addr>', 'rendezvous address', '127.0.0.1')
    .option('--master-port <port>', "rendezvous store's port on node 0 (0: any free port, one node only)", '29500')
    .argument('<command...>', 'the owlet command each rank runs, after -- (e.g. -- train --config run.yaml)')
    .passThroughOptions()
    .action((command: string[], o) => launchCommand({ ...o, command }, io));

  program.command('doctor').description('node, the CPU backend (threads, BLAS), the CUDA backend or why it cannot load, and the OWLET_* switches set')
    .action(() => { if (!doctorCommand(io)) failed.code = 1; });

  for (const c of program.commands) {
    c.configureOutput(program.configureOutput());
    c.exitOverride();
  }
  return program;
}

/** Runs the CLI on argv (without `node owlet`); returns the exit code. */
export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  exitWithLauncher(); // a rank of `owlet launch` does not outlive its launcher
  if (io === processIO) surviveClosedOutput();
  const failed = { code: 0 };
  const program = build(io, failed);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return failed.code;
  } catch (e) {
    if (e instanceof CommanderError) return exitCodeOf(e); // commander already printed its one-line message
    const message = e instanceof Error ? e.message : String(e);
    io.err(`owlet: ${message.split('\n').join(' ')}`);
    if (process.env.OWLET_DEBUG === '1' && e instanceof Error && e.stack) io.err(e.stack);
    return exitCodeOf(e);
  }
}
