// A progress bar with an ETA for long work (cli-progress). On a terminal it redraws in place and log lines are
// printed above it; in a log file (non-TTY) it prints a status line every `nonTtyIntervalMs` instead.
import cliProgress from 'cli-progress';

export interface ProgressOptions {
  total: number;
  /** Where the bar starts (a resumed run). */
  start?: number;
  label?: string;
  /** The bar's stream (default stderr). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Where log lines go when they cannot share the bar's terminal (default stdout). */
  logStream?: NodeJS.WritableStream & { isTTY?: boolean };
  nonTtyIntervalMs?: number;
}

export class Progress {
  private readonly multi: cliProgress.MultiBar;
  private readonly bar: cliProgress.SingleBar;
  private readonly viaBar: boolean;
  private readonly logStream: NodeJS.WritableStream;
  private stopped = false;

  constructor(o: ProgressOptions) {
    const stream = o.stream ?? process.stderr;
    this.logStream = o.logStream ?? process.stdout;
    // Log lines go through the bar only when both share a terminal (so the redraw does not overwrite them).
    this.viaBar = !!stream.isTTY && !!(this.logStream as { isTTY?: boolean }).isTTY;
    this.multi = new cliProgress.MultiBar({
      stream: stream as NodeJS.WritableStream,
      format: `${o.label ?? 'train'} [{bar}] {percentage}% | {value}/{total} | {duration_formatted} elapsed | ETA {eta_formatted}{status}`,
      barsize: 30,
      hideCursor: false,
      noTTYOutput: true,
      notTTYSchedule: o.nonTtyIntervalMs ?? 10_000,
      etaBuffer: 50,
      fps: 5,
      gracefulExit: false,
    }, stream.isTTY ? cliProgress.Presets.shades_classic : cliProgress.Presets.legacy); // plain ASCII in log files
    this.bar = this.multi.create(o.total, o.start ?? 0, { status: '' });
  }

  /** Moves the bar to `value`; `status` is a short suffix (e.g. the last loss). */
  update(value: number, status?: string): void {
    if (this.stopped) return;
    this.bar.update(value, { status: status ? ` | ${status}` : '' });
  }

  log(line: string): void {
    if (this.viaBar && !this.stopped) this.multi.log(line.endsWith('\n') ? line : line + '\n');
    else this.logStream.write(line.endsWith('\n') ? line : line + '\n');
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.viaBar) this.multi.update(); // flushes log lines buffered for the terminal
    this.multi.stop(); // draws the final state once
  }
}
