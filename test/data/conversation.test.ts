// Sample construction and masks per spec §4.4, on hand-written conversations. A toy tokenizer (one id per word, the
// markers one id each) keeps the expected arrays readable; a last test runs the real template with LLaMA ids.
import test from 'ava';
import { tokenizeConversation, tokenizeCaption, untruncatedLength, type TokenizedSample } from '../../lib/data/conversation.ts';
import { formatConversation, formatPrompt, SYSTEM_PROMPT, countImageTokens } from '../../lib/data/template.ts';
import { llamaTokenizer, type Tokenizer } from '../../lib/data/tokenizer.ts';
import { SampleError } from '../../lib/data/errors.ts';

const WORDS: Record<string, number> = { sys: 5, 'AI:': 7, '<image>': 8, q: 10, r: 11, a: 20, b: 21, c: 22, d: 23 };
const toy: Tokenizer = {
  source: 'toy', vocabSize: 100, bos: 1, eos: 2, pad: 0, unk: 0,
  encode(text) {
    if (text === '\nHuman: ') return [6];
    return text.split(/\s+/).filter(Boolean).map((w) => WORDS[w] ?? 99);
  },
  decode: () => '', idToPiece: () => undefined,
};
const M = 3; // media token length in these tests
const arr = (a: ArrayLike<number>): number[] => Array.from(a);
const pad = (ids: number[], n: number): number[] => [...ids, ...new Array(n - ids.length).fill(0)];

function check(t: import('ava').ExecutionContext, s: TokenizedSample, L: number, ids: number[], labels: number[]) {
  t.is(ids.length, labels.length);
  t.deepEqual(arr(s.inputIds), pad(ids, L + 1), 'input_ids');
  t.deepEqual(arr(s.promptMask), pad(labels.slice(1), L), 'prompt_mask = labels[1:]');
  t.deepEqual(arr(s.nonPaddingMask), pad(new Array(ids.length - 1).fill(1), L), 'non_padding_mask: i < len-1');
  t.deepEqual(arr(s.nonMediaMask), pad(ids.slice(1).map((x) => (x >= 0 ? 1 : 0)), L).map((x, i) => (i >= ids.length - 1 ? 1 : x)), 'non_media_mask');
  t.is(s.seqLength, ids.length);
}

test('text-only multi-turn: responses and their EOS are labelled, prompts are not', (t) => {
  const text = 'sys\nHuman: q\nAI: a b\nHuman: r\nAI: c';
  const s = tokenizeConversation(text, toy, { maxLength: 20, mediaTokenLength: M });
  //           BOS sys  H  q AI  a  b EOS  H  r AI  c EOS
  check(t, s, 20, [1, 5, 6, 10, 7, 20, 21, 2, 6, 11, 7, 22, 2],
    [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1]);
  t.is(s.labelCount, 5);
  t.is(s.mediaRuns, 0);
  t.false(s.truncated);
});

test('image sample with two images: each <image> is a run of M media ids, label 0, non_media 0', (t) => {
  const text = 'sys\nHuman: <image>\nHuman: <image>\nHuman: q\nAI: a\nHuman: r\nAI: b c';
  t.is(countImageTokens(text), 2);
  const s = tokenizeConversation(text, toy, { maxLength: 24, mediaTokenLength: M });
  const ids = [1, 5, 6, -1, -1, -1, 6, -1, -1, -1, 6, 10, 7, 20, 2, 6, 11, 7, 21, 22, 2];
  const labels = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1];
  check(t, s, 24, ids, labels);
  t.deepEqual(arr(s.nonMediaMask).slice(0, 10), [1, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
  t.is(s.mediaRuns, 2);
  t.is(s.labelCount, 5);
});

test('truncation cuts a response so that it ends with EOS at L+1, and stops', (t) => {
  const text = 'sys\nHuman: q\nAI: a b c\nHuman: r\nAI: d';
  const s = tokenizeConversation(text, toy, { maxLength: 6, mediaTokenLength: M });
  // [1 sys H q AI] has 5 ids; the response keeps L-5 = 1 token, then EOS: 7 = L+1 ids, nothing after.
  check(t, s, 6, [1, 5, 6, 10, 7, 20, 2], [0, 0, 0, 0, 0, 1, 1]);
  t.true(s.truncated);
  t.is(s.fullLength, 14);
  t.is(s.fullLength, untruncatedLength(text, toy, { maxLength: 6, mediaTokenLength: M }));
  // A prompt chunk is cut to fit L+1 (no EOS), the stop rule drops the rest: no label survives.
  const p = tokenizeConversation('sys a b c d\nHuman: q\nAI: a', toy, { maxLength: 6, mediaTokenLength: M });
  check(t, p, 6, [1, 5, 20, 21, 22, 23, 6], [0, 0, 0, 0, 0, 0, 0]);
  t.is(p.labelCount, 0);
});

test('image truncation: an image that does not fit ends the sample; its placeholder is not placed', (t) => {
  const text = 'sys\nHuman: <image>\nHuman: <image>\nHuman: q\nAI: a';
  const s = tokenizeConversation(text, toy, { maxLength: 8, mediaTokenLength: M });
  // [1 sys H -1 -1 -1 H] = 7; the second image needs 3 more > L+1 = 9: stop.
  check(t, s, 8, [1, 5, 6, -1, -1, -1, 6], [0, 0, 0, 0, 0, 0, 0]);
  t.is(s.mediaRuns, 1);
  t.true(s.truncated);
  // A response in an image sample is cut like in a text-only one.
  const r = tokenizeConversation('sys\nHuman: <image>\nAI: a b c d', toy, { maxLength: 8, mediaTokenLength: M });
  check(t, r, 8, [1, 5, 6, -1, -1, -1, 7, 20, 2], [0, 0, 0, 0, 0, 0, 0, 1, 1]);
});

test('official quirks are kept: empty responses, empty pieces, "AI: " right before "\\nHuman: "', (t) => {
  // Text-only keeps empty pieces: "AI: " at the end gives a lone labelled EOS.
  const e = tokenizeConversation('sys\nHuman: q\nAI: ', toy, { maxLength: 10, mediaTokenLength: M });
  check(t, e, 10, [1, 5, 6, 10, 7, 2], [0, 0, 0, 0, 0, 1]);
  // Image samples drop empty pieces, so the "\nHuman: " after an empty answer is taken as the response.
  const i = tokenizeConversation('sys\nHuman: <image>\nAI: \nHuman: q', toy, { maxLength: 12, mediaTokenLength: M });
  check(t, i, 12, [1, 5, 6, -1, -1, -1, 7, 6, 2, 10], [0, 0, 0, 0, 0, 0, 0, 1, 1, 0]);
  // The first piece is encoded as text even when it is "<image>".
  const f = tokenizeConversation('<image>\nAI: a', toy, { maxLength: 12, mediaTokenLength: M });
  check(t, f, 12, [1, 8, 7, 20, 2], [0, 0, 0, 1, 1]);
});

test('a first chunk longer than L+1 is refused as the official assertion does', (t) => {
  t.throws(() => tokenizeConversation('sys a b c d a b c d\nHuman: q\nAI: a', toy, { maxLength: 6, mediaTokenLength: M }), { instanceOf: SampleError });
  t.throws(() => tokenizeConversation('sys a b c d a b c d\nHuman: <image>', toy, { maxLength: 6, mediaTokenLength: M }), { instanceOf: SampleError });
  t.throws(() => tokenizeConversation('x', toy, { maxLength: 0, mediaTokenLength: M }), { instanceOf: SampleError });
});

test('stage-1 caption sample: BOS + image ids + caption + EOS, loss on caption and EOS', (t) => {
  const s = tokenizeCaption('a b c', toy, { maxLength: 10, mediaTokenLength: M });
  check(t, s, 10, [1, -1, -1, -1, 20, 21, 22, 2], [0, 0, 0, 0, 1, 1, 1, 1]);
  t.is(s.labelCount, 4);
  t.is(s.mediaRuns, 1);
  const cut = tokenizeCaption('a b c d', toy, { maxLength: 6, mediaTokenLength: M });
  check(t, cut, 6, [1, -1, -1, -1, 20, 21, 2], [0, 0, 0, 0, 1, 1, 1]);
  t.true(cut.truncated);
  t.throws(() => tokenizeCaption('a', toy, { maxLength: 3, mediaTokenLength: M }), { instanceOf: SampleError });
});

test('the real template with LLaMA ids: chunks are encoded separately and concatenated', (t) => {
  const tok = llamaTokenizer();
  const text = formatConversation({ images: 1, turns: [{ human: 'What color is the circle?', ai: 'red.' }, { human: 'How many shapes are there?', ai: 'two.' }] });
  t.is(text, `${SYSTEM_PROMPT}\nHuman: <image>\nHuman: What color is the circle?\nAI: red.\nHuman: How many shapes are there?\nAI: two.`);
  const s = tokenizeConversation(text, tok, { maxLength: 200, mediaTokenLength: 65 });
  const e = (x: string) => tok.encode(x);
  const H = e('\nHuman: '), A = e('AI: ');
  const ids = [1, ...e(SYSTEM_PROMPT), ...H, ...new Array(65).fill(-1), ...H, ...e('What color is the circle?\n'), ...A, ...e('red.'), 2,
    ...H, ...e('How many shapes are there?\n'), ...A, ...e('two.'), 2];
  t.deepEqual(arr(s.inputIds).slice(0, ids.length), ids);
  t.is(s.labelCount, e('red.').length + e('two.').length + 2);
  t.deepEqual(A, [319, 29902, 29901, 29871]); // ▁AI : ▁ (spec §4.4 item 7)
  t.is(formatPrompt('Is there a red circle?', { images: 1 }), `${SYSTEM_PROMPT}\nHuman: <image>\nHuman: Is there a red circle?\nAI: `);
});
