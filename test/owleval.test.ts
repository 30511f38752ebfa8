// OwlEval answering: each answer is written as soon as it exists, and a run stopped half-way (Ctrl-C, an unreadable
// image) continues after the answers it wrote instead of losing them; bad question files are named.
import test from 'ava';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { llamaTokenizer } from '../lib/data/index.ts';
import { appendAnswer, answerQuestions, readAnswers, readQuestionLines, readQuestions, type OwlEvalAnswer } from '../lib/generate/index.ts';
import { tinyOwl } from './helpers/tiny-owl.ts';
import { ArgumentError, liveTensors } from '../lib/tensor/index.ts';
import { ImageError } from '../lib/data/errors.ts';

const tmp = mkdtempSync(join(tmpdir(), 'owlet-owleval-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const questions = [
  { image: 'a.png', question_id: 1, question: 'What is it?' },
  { image: 'a.png', question_id: 2, question: 'And the colour?' },
  { image: 'b.png', question_id: 3, question: 'How many?' },
];
const qfile = join(tmp, 'q.jsonl');
writeFileSync(qfile, questions.map((q) => JSON.stringify(q)).join('\n') + '\n');

test('question files: missing, a folder, empty and malformed rows are named errors', (t) => {
  t.deepEqual(readQuestions(qfile), questions);
  t.throws(() => readQuestions(join(tmp, 'none.jsonl')), { instanceOf: ArgumentError, message: /not found/ });
  t.throws(() => readQuestions(tmp), { instanceOf: ArgumentError, message: /is a folder/ });
  writeFileSync(join(tmp, 'empty.jsonl'), '\n');
  t.throws(() => readQuestions(join(tmp, 'empty.jsonl')), { instanceOf: ArgumentError, message: /holds no questions/ });
});

test('readAnswers: the answered prefix of the questions; a cut last line dropped; other answers refused', (t) => {
  const f = join(tmp, 'a.jsonl');
  t.deepEqual(readAnswers(f, questions), []);
  const a1: OwlEvalAnswer = { ...questions[0], answer: 'x', model_id: 'm' };
  appendAnswer(f, a1);
  writeFileSync(f, readFileSync(f, 'utf8') + '{"image":"a.png","quest'); // the line being written when it stopped
  t.deepEqual(readAnswers(f, questions), [a1]);
  writeFileSync(f, JSON.stringify({ ...a1, question_id: 9 }) + '\n');
  t.throws(() => readAnswers(f, questions), { instanceOf: ArgumentError, message: /already holds answers to other questions/ });
});

test('answers go out one by one and a second run continues after the ones already given', async (t) => {
  const imgs = join(tmp, 'img');
  mkdirSync(imgs, { recursive: true });
  await sharp({ create: { width: 28, height: 28, channels: 3, background: '#c00' } }).png().toFile(join(imgs, 'a.png'));
  const model = tinyOwl({ seed: 5 });
  const tok = llamaTokenizer();
  const written: OwlEvalAnswer[] = [];
  // b.png does not exist: the run stops at the third question after giving two answers
  await t.throwsAsync(answerQuestions(model, tok, questions, imgs, { greedy: true, maxNewTokens: 3, onAnswer: (a) => written.push(a) }),
    { message: /b\.png/ });
  t.deepEqual(written.map((a) => a.question_id), [1, 2]);
  await sharp({ create: { width: 28, height: 28, channels: 3, background: '#00c' } }).png().toFile(join(imgs, 'b.png'));
  const more: OwlEvalAnswer[] = [];
  const all = await answerQuestions(model, tok, questions, imgs, { greedy: true, maxNewTokens: 3, done: written, onAnswer: (a) => more.push(a) });
  t.deepEqual(more.map((a) => a.question_id), [3]); // only the one not answered yet
  t.deepEqual(all.slice(0, 2), written);
  // the same answers as one uninterrupted run (the earlier answers stay in the dialogue's history)
  const straight = await answerQuestions(model, tok, questions, imgs, { greedy: true, maxNewTokens: 3 });
  t.deepEqual(all.map((a) => a.answer), straight.map((a) => a.answer));
  for (const p of model.params.values()) p.dispose();
});

// Robustness audit: the line a bad row is on is the file's own line (blank lines counted; it was the index among the
// non-blank rows), a `null` row is a named error (it was a TypeError from inside readQuestions), a byte-order mark is
// not a malformed first row, and a question_id must be a number or a string (null was taken).
test('question files: lines are named as in the file; null rows, BOMs and null ids', (t) => {
  const f = join(tmp, 'hostile-q.jsonl');
  const row = JSON.stringify(questions[0]);
  writeFileSync(f, `${row}\n\n\nnot json\n`);
  t.throws(() => readQuestions(f), { instanceOf: ArgumentError, message: `${f}:4: not JSON (Unexpected token 'o', "not json" is not valid JSON)` });
  writeFileSync(f, `${row}\nnull\n`);
  t.throws(() => readQuestions(f), { instanceOf: ArgumentError, message: new RegExp(`^${f}:2: needs string "image"`) });
  writeFileSync(f, JSON.stringify({ ...questions[0], question_id: null }) + '\n');
  t.throws(() => readQuestions(f), { instanceOf: ArgumentError, message: /:1: needs .*"question_id"/ });
  writeFileSync(f, `\uFEFF${row}\r\n`);
  t.deepEqual(readQuestions(f), [questions[0]]);
  writeFileSync(f, `${row}\n\n${JSON.stringify(questions[2])}\n`);
  t.deepEqual(readQuestionLines(f), { questions: [questions[0], questions[2]], lines: [1, 3] });
});

// A long eval stopped by one missing image said only "image …/b.png: file not found": not which question (of 82) asked
// for it, nor that the answers before it were kept.
test('a question whose image is missing stops the eval naming its file line and question_id', async (t) => {
  const imgs = join(tmp, 'img-missing');
  mkdirSync(imgs, { recursive: true });
  await sharp({ create: { width: 28, height: 28, channels: 3, background: '#c00' } }).png().toFile(join(imgs, 'a.png'));
  const f = join(tmp, 'q-missing.jsonl');
  writeFileSync(f, questions.map((q) => JSON.stringify(q)).join('\n\n') + '\n'); // rows on lines 1, 3 and 5
  const model = tinyOwl({ seed: 5 });
  const tok = llamaTokenizer();
  const live = liveTensors();
  const { questions: qs, lines } = readQuestionLines(f);
  const e = await t.throwsAsync(answerQuestions(model, tok, qs, imgs, { greedy: true, maxNewTokens: 2, source: { file: f, lines } }),
    { instanceOf: ImageError });
  t.true(e!.message.startsWith(`${f}:5 (question_id 3): image ${join(imgs, 'b.png')}: file not found`), e!.message);
  t.regex(e!.message, /the 2 answer\(s\) before it were given/);
  t.is(liveTensors(), live, 'no tensor left behind by the failed question');
  // without the file's lines: the question's place in the list
  await t.throwsAsync(answerQuestions(model, tok, qs, imgs, { greedy: true, maxNewTokens: 2 }), { message: /^question 3 of 3 \(question_id 3\): image / });
  for (const p of model.params.values()) p.dispose();
});

test('readAnswers: a row that is JSON but not an object is named, not a TypeError', (t) => {
  const f = join(tmp, 'a-null.jsonl');
  for (const row of ['null', '5', '"x"']) {
    writeFileSync(f, `${row}\n${JSON.stringify({ ...questions[0], answer: 'x', model_id: 'm' })}\n`);
    t.throws(() => readAnswers(f, questions), { instanceOf: ArgumentError, message: /already holds answers to other questions \(line 1\)/ }, row);
  }
});

// `owlet eval` end to end on a saved model: a missing image stops it naming the questions file's own line, the answers
// given before it stay in --out, and the rerun (after the image is made) continues after them.
test('owlet eval: a missing image is named by its line in the questions file; the rerun continues after the answers kept', async (t) => {
  const { main } = await import('../lib/cli/main.ts');
  const { saveCheckpoint } = await import('../lib/model/io/index.ts');
  const dir = join(tmp, 'cli-model'), imgs = join(tmp, 'cli-img'), out = join(tmp, 'cli-out', 'answers.jsonl');
  const model = tinyOwl({ seed: 5 });
  saveCheckpoint(dir, model.params, { config: model.config });
  for (const p of model.params.values()) p.dispose();
  mkdirSync(imgs, { recursive: true });
  await sharp({ create: { width: 28, height: 28, channels: 3, background: '#c00' } }).png().toFile(join(imgs, 'a.png'));
  const f = join(tmp, 'cli-q.jsonl');
  writeFileSync(f, questions.map((q) => JSON.stringify(q)).join('\n\n') + '\n'); // rows on lines 1, 3 and 5
  const run = async () => {
    const lines: string[] = [];
    const code = await main(['eval', '--checkpoint', dir, '--questions', f, '--images', imgs, '--out', out, '--max-new-tokens', '2'],
      { out: (l) => lines.push(l), err: (l) => lines.push(l) });
    return { code, text: lines.join('\n') };
  };
  const first = await run();
  t.is(first.code, 1, first.text);
  t.regex(first.text, new RegExp(`${f.replace(/[.]/g, '\\.')}:5 \\(question_id 3\\): image .*b\\.png: file not found`));
  t.deepEqual(readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l).question_id), [1, 2]);
  await sharp({ create: { width: 28, height: 28, channels: 3, background: '#00c' } }).png().toFile(join(imgs, 'b.png'));
  const second = await run();
  t.is(second.code, 0, second.text);
  t.regex(second.text, /continuing after the 2 answers already in/);
  t.deepEqual(readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l).question_id), [1, 2, 3]);
});
