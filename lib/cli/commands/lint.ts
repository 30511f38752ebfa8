// owlet lint-data FILE… [--images-dir DIR] [--max-length N]
import { formatLintReport, lintData } from '../../data/index.ts';
import { UsageError } from '../../train/errors.ts';
import type { CliIO } from '../io.ts';

export async function lintCommand(o: { files: string[]; imagesDir?: string; maxLength?: string; mediaTokenLength?: string }, io: CliIO): Promise<boolean> {
  const maxLength = o.maxLength === undefined ? undefined : Number(o.maxLength);
  if (maxLength !== undefined && !(Number.isInteger(maxLength) && maxLength > 0)) throw new UsageError(`--max-length must be a positive integer, got ${o.maxLength}`);
  const report = await lintData(o.files.map((path) => ({ path, imageRoot: o.imagesDir })), {
    maxLength, mediaTokenLength: o.mediaTokenLength ? Number(o.mediaTokenLength) : undefined,
  });
  io.out(formatLintReport(report));
  return report.ok;
}
