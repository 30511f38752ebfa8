// Where CLI output goes (a test passes its own sinks).
export interface CliIO {
  out(line: string): void;
  err(line: string): void;
}
export const processIO: CliIO = {
  out: (l) => { process.stdout.write(l.endsWith('\n') ? l : l + '\n'); },
  err: (l) => { process.stderr.write(l.endsWith('\n') ? l : l + '\n'); },
};

/**
 * While installed, a closed stdout or stderr (`owlet train | head`, a terminal that went away) only drops the lines
 * written to it: Node's EPIPE 'error' event had no listener, so it ended the process — a training run or a launcher's
 * ranks stopped because a reader of the log stopped reading. Returns the function that uninstalls it.
 */
export function surviveClosedOutput(): () => void {
  const onError = (e: NodeJS.ErrnoException) => { if (e.code !== 'EPIPE') throw e; };
  process.stdout.on('error', onError);
  process.stderr.on('error', onError);
  return () => { process.stdout.off('error', onError); process.stderr.off('error', onError); };
}
