// lint-data report on a hand-made set with one of each problem.
import test from 'ava';
import sharp from 'sharp';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lintData, formatLintReport } from '../../lib/data/lint.ts';
import { formatConversation, SYSTEM_PROMPT } from '../../lib/data/template.ts';
import { llamaTokenizer } from '../../lib/data/tokenizer.ts';

const dir = mkdtempSync(join(tmpdir(), 'owlet-lint-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

test('lintData counts samples, images, tokens and reports each kind of problem', async (t) => {
  await sharp(Buffer.alloc(8 * 8 * 3, 100), { raw: { width: 8, height: 8, channels: 3 } }).png().toFile(join(dir, 'ok.png'));
  writeFileSync(join(dir, 'bad.png'), 'garbage');
  const turn = (ai: string, images = 1) => formatConversation({ images, turns: [{ human: 'What is it?', ai }] });
  const L = 120, M = 9;
  const rows = [
    { text: turn('a square.'), image: ['ok.png'] }, // 1 fine
    { text: turn('word '.repeat(200)), image: ['ok.png'] }, // 2 over-long (response cut, still labelled)
    { text: turn('x', 2), image: ['ok.png'] }, // 3 too many placeholders
    { text: turn('x', 1), image: ['ok.png', 'ok.png'] }, // 4 unused image
    { text: turn('x'), image: ['gone.png'] }, // 5 missing image
    { text: turn('x'), image: ['bad.png'] }, // 6 unreadable image
    '{"text": 3}', // 7 malformed
    { text: `${SYSTEM_PROMPT}\nHuman: hello` }, // 8 text-only without a response: no labels
    { text: `${'long '.repeat(200)}\nAI: never seen` }, // 9 first chunk over L+1: refused
    { text: `${SYSTEM_PROMPT}${'\nHuman: tell me more'.repeat(20)}\nAI: cut away` }, // 10 response truncated away: no labels
  ];
  const inst = join(dir, 'inst.jsonl');
  writeFileSync(inst, rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n'));
  const caps = join(dir, 'caps.jsonl');
  writeFileSync(caps, JSON.stringify({ image: 'ok.png', text: 'a gray square.' }) + '\n');

  const r = await lintData([inst, caps], { maxLength: L, mediaTokenLength: M });
  t.deepEqual(r.counts, {
    'format': 1, 'no-labels': 2, 'too-many-placeholders': 1, 'unused-images': 1, 'merged-images': 0, 'missing-image': 1, 'unreadable-image': 1,
    'over-long': 2, 'sample-error': 1,
  });
  const at = (kind: string) => r.issues.filter((i) => i.kind === kind).map((i) => i.id.split(':').pop());
  t.deepEqual(at('no-labels'), ['8', '10']);
  t.deepEqual(at('over-long'), ['2', '10']);
  t.regex(r.issues.find((i) => i.kind === 'missing-image')!.message, /gone\.png: file not found \(first used by .*inst\.jsonl:5\)/);
  t.regex(r.issues.find((i) => i.kind === 'unreadable-image')!.message, /bad\.png/);
  t.false(r.ok);
  t.is(r.totals.samples, 10);
  t.deepEqual([r.files[0].instructions, r.files[0].textOnly, r.files[1].captions], [6, 3, 1]);
  t.is(r.totals.images, 8);
  t.is(r.totals.uniqueImages, 3);
  // Token counts: the caption sample is BOS + M + caption + EOS.
  const capIds = 1 + M + llamaTokenizer().encode('a gray square.').length + 1;
  t.is(r.files[1].tokens, capIds);
  t.is(r.files[1].labelTokens, capIds - 1 - M);
  t.true(r.files[0].untruncatedTokens > r.files[0].tokens);
  const text = formatLintReport(r);
  t.regex(text, /inst\.jsonl: 9 samples/);
  t.regex(text, /error: 1 missing images/);
  t.regex(text, /warning: 2 samples with no counted token \(NaN loss\)/);
  t.regex(text, /FAILED: 5 errors, 5 warnings/);

  const good = await lintData([caps], { maxLength: L, mediaTokenLength: M, images: 'header' });
  t.true(good.ok);
  t.regex(formatLintReport(good), /OK: no errors, 0 warnings/);
});
