// owlet lint-data FILE… [--images-dir DIR] [--max-length N]
import { existsSync, statSync } from 'node:fs';
import { formatLintReport, lintData } from '../../data/index.ts';
import { UsageError } from '../../train/errors.ts';
import type { CliIO } from '../io.ts';

export async function lintCommand(o: { files: string[]; imagesDir?: string; maxLength?: string; mediaTokenLength?: string }, io: CliIO): Promise<boolean> {
  const maxLength = o.maxLength === undefined ? undefined : Number(o.maxLength);
  if (maxLength !== undefined && !(Number.isInteger(maxLength) && maxLength > 0)) throw new UsageError(`--max-length must be a positive integer, got ${o.maxLength}`);
  const mediaTokenLength = o.mediaTokenLength === undefined ? undefined : Number(o.mediaTokenLength);
  if (mediaTokenLength !== undefined && !(Number.isInteger(mediaTokenLength) && mediaTokenLength > 0)) {
    throw new UsageError(`--media-token-length must be a positive integer, got ${o.mediaTokenLength}`);
  }
  for (const f of o.files) {
    if (!existsSync(f)) throw new UsageError(`${f}: no such file`);
    if (statSync(f).isDirectory()) throw new UsageError(`${f} is a folder; give the JSONL files`);
  }
  const report = await lintData(o.files.map((path) => ({ path, imageRoot: o.imagesDir })), { maxLength, mediaTokenLength });
  io.out(formatLintReport(report));
  return report.ok;
}
