// One rank of test/dist/failure.test.ts, started with torchrun's variables set (rank 0 hosts the store). Runs the
// scenario named in argv[2] and prints one JSON line: { ok: results } or { error: { name, op, message } }, with how long
// the exchange under test took.
import { initProcessGroup } from '../../../lib/dist/index.ts';

const scenario = process.argv[2];
let opStart = 0;

async function run(): Promise<unknown> {
  const g = initProcessGroup();
  const r = g.rank;
  switch (scenario) {
    case 'exchanges': {
      // Lengths that do not fill whole numbers of the packing, an empty string, non-ASCII text.
      const a = g.gather(r === 0 ? 'ab' : 'ünïcødé → 🦉 and some more text');
      const b = g.gather(r === 0 ? '' : 'x');
      const s = g.shareFromRoot(r === 0 ? JSON.stringify({ path: '/runs/é/ckpt-3', n: 1e-300 }) : undefined);
      const e = g.shareFromRoot(r === 0 ? '' : undefined);
      g.close();
      return { a, b, s, e };
    }
    case 'peer-gone': {
      // Rank 1 stops (as a rank whose model failed to load) before the exchange rank 0 is waiting in.
      if (r === 1) process.exit(1);
      opStart = Date.now();
      g.gather('config of rank 0');
      return {};
    }
    case 'out-of-step': {
      // Rank 0 shares a value (the checkpoint it resumes) while rank 1, started without --resume, gathers configs.
      opStart = Date.now();
      if (r === 0) g.shareFromRoot('/runs/x/ckpt-3');
      else g.gather('config of rank 1');
      return {};
    }
    default: throw new Error(`unknown scenario ${scenario}`);
  }
}

try {
  const ok = await run();
  process.stdout.write(JSON.stringify({ ok }) + '\n');
} catch (e) {
  const x = e as { name?: string; op?: string; message?: string };
  process.stdout.write(JSON.stringify({ error: { name: x.name, op: x.op, message: x.message }, opMs: opStart ? Date.now() - opStart : null }) + '\n');
  process.exitCode = 3;
}
