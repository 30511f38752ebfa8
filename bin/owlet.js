#!/usr/bin/env node
// owlet's command: registers tsx (owlet ships TypeScript sources) and runs lib/cli/main.ts.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../lib/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
