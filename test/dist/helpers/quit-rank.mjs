// Preloaded into every process of a launch test (NODE_OPTIONS=--import): once training runs (rank 0 has written the
// file QUIT_WHEN_EXISTS), rank 1 leaves quietly with exit code 0, as a rank whose run ended early would.
import { existsSync } from 'node:fs';

if (process.env.RANK === '1' && process.env.QUIT_WHEN_EXISTS) {
  setInterval(() => { if (existsSync(process.env.QUIT_WHEN_EXISTS)) process.exit(0); }, 50).unref();
}
