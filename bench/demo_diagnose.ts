// Where the demo's answers go wrong (bench/results/demo_2026-11-26.md, session 4), from a finished `owlet demo --out RUN`:
//   captions: the stage-1 model's captions of 200 eval and 200 train images compared object by object (when the count
//             is right): colour and shape right per object, colour right by scene size, whether each wrong colour is
//             another shape's colour in the same scene (binding) or absent from it (perception), colour right by cell,
//             and how many multi-shape captions have the right objects in another order;
//   gridqa:   the warm-up LLM answering the eval questions from the exact grid text in place of the image — what the
//             LLM reads right before any vision is involved.
// Run: npx tsx bench/demo_diagnose.ts captions RUN [CHECKPOINT]   |   npx tsx bench/demo_diagnose.ts gridqa RUN [CHECKPOINT]
import { readFileSync } from 'node:fs';
import { captionPrompt, gridText, type GridStyle, IMAGE_TOKEN, llamaTokenizer, type Scene } from '../lib/data/index.ts';
import { DEMO_SYSTEM } from '../lib/demo/index.ts';
import { questionType, turnsOf } from '../lib/demo/evaluate.ts';
import { generate, loadImageTensor } from '../lib/generate/index.ts';
import { loadModel, type MplugOwl } from '../lib/model/index.ts';
import { scope } from '../lib/tensor/index.ts';

type SceneRow = Scene & { image: string };
const rows = <T>(file: string): T[] => readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as T);
const pct = (a: number, n: number) => `${(100 * a / Math.max(n, 1)).toFixed(1)}%`;
const tok = llamaTokenizer();

/** "a red circle, a blue square and a green triangle." → [['red', 'circle'], …] */
const objects = (caption: string) => caption.trim().replace(/\.$/, '').split(/, | and /).map((p) => p.trim().split(' ').slice(1));

async function captionsOf(m: MplugOwl, run: string, scenes: SceneRow[]): Promise<string[]> {
  const prompt = captionPrompt(DEMO_SYSTEM), out: string[] = [];
  for (let s = 0; s < scenes.length; s += 32) {
    const chunk = scenes.slice(s, s + 32);
    const images = await Promise.all(chunk.map((r) => loadImageTensor(`${run}/data/${r.image}`, m.config.vision.imageSize)));
    out.push(...scope(() => generate(m, tok, images.map((img) => ({ prompt, images: [img] })), { greedy: true, maxNewTokens: 24 })));
    images.forEach((t) => t.dispose());
  }
  return out;
}

async function captions(run: string, checkpoint = `${run}/stage1/final`): Promise<void> {
  const m = loadModel(checkpoint);
  for (const split of ['eval', 'train']) {
    const scenes = rows<SceneRow>(`${run}/data/${split}_scenes.jsonl`).slice(0, 200);
    const got = await captionsOf(m, run, scenes);
    let countRight = 0, objs = 0, colour = 0, shape = 0, inScene = 0, absent = 0, asSet = 0, setScenes = 0;
    const bySize = new Map<number, [number, number]>(), byCell = Array.from({ length: 9 }, () => [0, 0]);
    scenes.forEach((sc, i) => {
      const g = objects(got[i]);
      if (g.length !== sc.shapes.length) return;
      countRight++;
      // The objects right as a multiset (order ignored): binding right even where the reading order is not.
      const key = (pairs: string[][]) => pairs.map((p) => p.join(' ')).sort().join(', ');
      if (sc.shapes.length > 1) { setScenes++; if (key(g) === key(sc.shapes.map((s) => [s.color, s.shape]))) asSet++; }
      sc.shapes.forEach((s, k) => {
        const ok = g[k][0] === s.color, size = bySize.get(sc.shapes.length) ?? [0, 0], cell = byCell[s.row * 3 + s.col];
        objs++; size[1]++; cell[1]++;
        if (ok) { colour++; size[0]++; cell[0]++; } else if (sc.shapes.some((o) => o.color === g[k][0])) inScene++; else absent++;
        if (g[k][1] === s.shape) shape++;
        bySize.set(sc.shapes.length, size);
      });
    });
    console.log(`${split}: count right ${countRight}/${scenes.length}; of their ${objs} objects colour ${pct(colour, objs)}, shape ${pct(shape, objs)}`);
    console.log(`  colour by scene size: ${[...bySize].sort().map(([n, [a, t]]) => `${n} shape(s) ${pct(a, t)}`).join(', ')}`);
    console.log(`  wrong colours: ${inScene} another shape's in the scene, ${absent} not in the scene`);
    console.log(`  scenes of 2–3 shapes whose objects are right as a set (order ignored): ${asSet}/${setScenes}`);
    console.log(`  colour by cell (reading order): ${byCell.map(([a, t]) => pct(a, t)).join(' ')}`);
  }
}

async function gridqa(run: string, checkpoint = `${run}/warmup/final`): Promise<void> {
  const m = loadModel(checkpoint);
  // The style the run's warm-up read (demo.json records the generator's options; runs before it existed used words).
  const style = (JSON.parse(readFileSync(`${run}/data/demo.json`, 'utf8')) as { options: { gridStyle?: GridStyle } }).options.gridStyle ?? 'words';
  const grid = new Map(rows<SceneRow>(`${run}/data/eval_scenes.jsonl`).map((s) => [s.image, gridText(s, style)]));
  const items: { prompt: string; want: string; kind: string }[] = [];
  for (const r of rows<{ text: string; image: string[] }>(`${run}/data/eval_instructions.jsonl`)) {
    let prefix = r.text.slice(0, r.text.indexOf(IMAGE_TOKEN)) + grid.get(r.image[0]);
    for (const t of turnsOf(r.text)) {
      items.push({ prompt: `${prefix}\nHuman: ${t.human}\nAI: `, want: t.ai, kind: questionType(t.human) });
      prefix += `\nHuman: ${t.human}\nAI: ${t.ai}`;
    }
  }
  const acc = new Map<string, [number, number]>();
  for (let s = 0; s < items.length; s += 32) {
    const chunk = items.slice(s, s + 32);
    const out = scope(() => generate(m, tok, chunk.map((i) => ({ prompt: i.prompt })), { greedy: true, maxNewTokens: 6 }));
    chunk.forEach((it, i) => {
      const a = acc.get(it.kind) ?? [0, 0];
      a[1]++;
      if (out[i].trim() === it.want.trim()) a[0]++;
      acc.set(it.kind, a);
    });
  }
  const all = [...acc.values()].reduce((x, y) => [x[0] + y[0], x[1] + y[1]], [0, 0]);
  console.log(`grid QA ${[...acc].map(([k, [c, n]]) => `${k} ${pct(c, n)}`).join(' | ')} | all ${pct(all[0], all[1])}`);
}

const [what, run, checkpoint] = process.argv.slice(2);
if (what === 'captions' && run) await captions(run, checkpoint);
else if (what === 'gridqa' && run) await gridqa(run, checkpoint);
else {
  console.error('usage: npx tsx bench/demo_diagnose.ts captions|gridqa RUN [CHECKPOINT]');
  process.exitCode = 2;
}
