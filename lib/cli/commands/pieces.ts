// Commands whose implementation lives in another module: each forwards its parsed options to that module's export,
// or fails with a clear "not yet available" when this build does not have it.
import { requirePiece, type PieceName } from '../../train/components.ts';
import type { CliIO } from '../io.ts';

export type PieceCommand = (opts: Record<string, unknown>, io: CliIO) => Promise<void> | void;

export async function runPiece(piece: PieceName, command: string, opts: Record<string, unknown>, io: CliIO): Promise<void> {
  const fn = await requirePiece<PieceCommand>(piece, command);
  await fn(opts, io);
}
