// owlet doctor: what this installation can run on.
import { cpu, cuda } from '../../native.ts';
import { BackendError } from '../../tensor/errors.ts';
import type { CliIO } from '../io.ts';

/** Returns false when the CPU backend cannot load (owlet cannot run at all). */
export function doctorCommand(io: CliIO): boolean {
  io.out(`node ${process.version} (${process.platform}-${process.arch}), N-API ${process.versions.napi}`);
  let ok = true;
  try {
    const info = cpu().info();
    io.out(`cpu backend: ${Object.entries(info).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(', ')}`);
  } catch (e) {
    ok = false;
    io.out(`cpu backend: NOT AVAILABLE: ${(e as Error).message}`);
  }
  try {
    const info = cuda().info();
    io.out(`cuda backend: ${Object.entries(info).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(', ')}`);
  } catch (e) {
    io.out(`cuda backend: not available: ${e instanceof BackendError ? e.message : String(e)}`);
  }
  // Kernel and path switches change speed (and, for some, the numbers): a run that is slower than it should be may
  // have one set (native/src/cuda/README.md lists them).
  const switches = Object.entries(process.env).filter(([k]) => k.startsWith('OWLET_')).map(([k, v]) => `${k}=${v}`).sort();
  io.out(`switches: ${switches.length ? switches.join(' ') : 'none (no OWLET_* environment variable is set)'}`);
  return ok;
}
