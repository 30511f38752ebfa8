// OwlEval answering: each answer is written as soon as it exists, and a run stopped half-way (Ctrl-C, an unreadable
// image) continues after the answers it wrote instead of losing them; bad question files are named.
import test from 'ava';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { llamaTokenizer } from '../lib/data/index.ts';
import { appendAnswer, answerQuestions, readAnswers, readQuestions, type OwlEvalAnswer } from '../lib/generate/index.ts';
import { tinyOwl } from './helpers/tiny-owl.ts';
import { ArgumentError } from '../lib/tensor/index.ts';

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
