// Echoes ava's TAP output and ends with the line CI reads: "N passed, N failed[, N skipped]".
// Exits 1 when a test failed or none passed.
import { createInterface } from 'node:readline';

let pass = 0, fail = 0, skip = 0, todo = 0;
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  console.log(line);
  let m;
  if ((m = /^# pass (\d+)/.exec(line))) pass = Number(m[1]);
  else if ((m = /^# fail (\d+)/.exec(line))) fail = Number(m[1]);
  else if ((m = /^# skip (\d+)/.exec(line))) skip = Number(m[1]);
  else if ((m = /^# todo (\d+)/.exec(line))) todo = Number(m[1]);
});
rl.on('close', () => {
  console.log(`${pass} passed, ${fail} failed${skip || todo ? `, ${skip + todo} skipped` : ''}`);
  process.exit(fail > 0 || pass === 0 ? 1 : 0);
});
