// Where CLI output goes (a test passes its own sinks).
export interface CliIO {
  out(line: string): void;
  err(line: string): void;
}
export const processIO: CliIO = {
  out: (l) => { process.stdout.write(l.endsWith('\n') ? l : l + '\n'); },
  err: (l) => { process.stderr.write(l.endsWith('\n') ? l : l + '\n'); },
};
