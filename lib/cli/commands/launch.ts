// owlet launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] -- <owlet command>
import { launch } from '../../dist/launch.ts';
import { UsageError } from '../../train/errors.ts';
import type { CliIO } from '../io.ts';

export interface LaunchArgs {
  nprocPerNode: string;
  nnodes: string;
  nodeRank: string;
  masterAddr: string;
  masterPort: string;
  command: string[];
}

function int(v: string, flag: string): number {
  if (!/^\d+$/.test(v.trim())) throw new UsageError(`launch: ${flag} must be a non-negative integer, got '${v}'`);
  return Number(v);
}

export async function launchCommand(a: LaunchArgs, io: CliIO): Promise<void> {
  await launch({
    nprocPerNode: int(a.nprocPerNode, '--nproc-per-node'), nnodes: int(a.nnodes, '--nnodes'), nodeRank: int(a.nodeRank, '--node-rank'),
    masterAddr: a.masterAddr, masterPort: int(a.masterPort, '--master-port'), command: a.command, out: io.out, err: io.err,
  });
}
