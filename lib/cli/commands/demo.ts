// owlet demo [--out DIR] [--device cpu|cuda|auto]
import { runDemo } from '../../demo/index.ts';
import type { CliIO } from '../io.ts';

export async function demoCommand(o: { out?: string; device?: 'cpu' | 'cuda' | 'auto' }, io: CliIO): Promise<void> {
  await runDemo({ out: o.out, device: o.device, log: io.out, progress: process.stdout.isTTY });
}
