// The built-in demo world: scenes of 1–3 filled shapes on a 3×3 grid, their rasterisation, and the language about
// them (captions in reading order, questions whose answers the scene determines, text-only sums).
import type { Rng } from './rng.ts';

export const SHAPES = ['circle', 'square', 'triangle'] as const;
export const COLORS = ['red', 'green', 'blue', 'yellow'] as const;
export type ShapeName = (typeof SHAPES)[number];
export type ColorName = (typeof COLORS)[number];

export const COLOR_RGB: Record<ColorName, readonly [number, number, number]> = {
  red: [220, 40, 40], green: [40, 170, 60], blue: [40, 80, 220], yellow: [240, 200, 30],
};

export interface PlacedShape {
  shape: ShapeName;
  color: ColorName;
  /** Grid cell, 0–2 each. */
  row: number;
  col: number;
  /** Side (or diameter) and centre in pixels, jittered within the cell. */
  size: number;
  cx: number;
  cy: number;
}

export interface Scene { shapes: PlacedShape[] }

const NUMBER_WORDS = ['zero', 'one', 'two', 'three'];

/** How shapes sit in their cells: side as a fraction of the cell, and how much of the leftover room the centre may
 *  move (0: centred, 1: anywhere the shape still fits in its cell). */
export interface SceneLayout { size: readonly [number, number]; jitter: number }
export const DEFAULT_LAYOUT: SceneLayout = { size: [0.45, 0.8], jitter: 1 };

/** 1–3 shapes in distinct cells, in reading order (top row first, left to right). The random draws do not depend on
 *  the layout, so the same seed gives the same scenes (and captions) at any image size or layout. */
export function sampleScene(r: Rng, imageSize: number, layout: SceneLayout = DEFAULT_LAYOUT): Scene {
  const n = 1 + r.int(3);
  const cells = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  for (let i = cells.length - 1; i > 0; i--) { const j = r.int(i + 1); [cells[i], cells[j]] = [cells[j], cells[i]]; }
  const cell = imageSize / 3;
  const shapes = cells.slice(0, n).sort((a, b) => a - b).map((c) => {
    const row = Math.floor(c / 3), col = c % 3;
    const size = cell * (layout.size[0] + (layout.size[1] - layout.size[0]) * r.uniform(0, 1));
    const slack = layout.jitter * (cell - size) / 2;
    return {
      shape: SHAPES[r.int(SHAPES.length)], color: COLORS[r.int(COLORS.length)], row, col, size,
      cx: (col + 0.5) * cell + r.uniform(-slack, slack), cy: (row + 0.5) * cell + r.uniform(-slack, slack),
    };
  });
  return { shapes };
}

function inside(s: PlacedShape, x: number, y: number): boolean {
  const h = s.size / 2, dx = x - s.cx, dy = y - s.cy;
  if (s.shape === 'square') return Math.abs(dx) <= h && Math.abs(dy) <= h;
  if (s.shape === 'circle') return dx * dx + dy * dy <= h * h;
  // Upward isosceles triangle: apex (0, −h), base corners (±h, h). Inside iff below both slanted edges.
  return dy <= h && dy >= -h && Math.abs(dx) <= (dy + h) / 2;
}

/** White RGB canvas with the shapes filled (2×2 supersampled edges), as raw HWC bytes. */
export function rasterize(scene: Scene, size: number): Buffer {
  const img = Buffer.alloc(size * size * 3, 255);
  const sub = [0.25, 0.75];
  for (const s of scene.shapes) {
    const rgb = COLOR_RGB[s.color];
    const x0 = Math.max(0, Math.floor(s.cx - s.size / 2) - 1), x1 = Math.min(size - 1, Math.ceil(s.cx + s.size / 2) + 1);
    const y0 = Math.max(0, Math.floor(s.cy - s.size / 2) - 1), y1 = Math.min(size - 1, Math.ceil(s.cy + s.size / 2) + 1);
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        let cover = 0;
        for (const oy of sub) for (const ox of sub) if (inside(s, x + ox, y + oy)) cover++;
        if (!cover) continue;
        const a = cover / 4, o = (y * size + x) * 3;
        for (let c = 0; c < 3; c++) img[o + c] = Math.round(img[o + c] * (1 - a) + rgb[c] * a);
      }
    }
  }
  return img;
}

/** "a red circle.", "a red circle and a blue square.", "a red circle, a blue square and a green triangle." */
export function caption(scene: Scene): string {
  const parts = scene.shapes.map((s) => `a ${s.color} ${s.shape}`);
  if (parts.length === 1) return `${parts[0]}.`;
  return `${parts.slice(0, -1).join(', ')} and ${parts.at(-1)}.`;
}

/**
 * The scene as a grid description, in reading order, standing in for the image: the demo's text warm-up teaches the
 * LLM to read scenes written this way (what a pretrained LLM already knows), and stage 1 then teaches the visual side
 * to write image tokens the LLM reads as such a description.
 * - 'words': two words per cell ("red circle" or "empty cell") and a final ".": 19 LLaMA tokens, one per image token
 *   of a model with 18 queries (+ the abstractor's end token). Answering "What color is the circle?" from it needs
 *   the colour word bound to the shape word after it (a previous-token circuit).
 * - 'codes': one single-token code per cell (GRID_CODES: a capital letter per colour and shape, "x" for an empty cell)
 *   and a final ".": 10 tokens (9 queries + the end token). Colour and shape sit in one token, so no binding is needed.
 */
export type GridStyle = 'words' | 'codes';
export const GRID_STYLES: readonly GridStyle[] = ['words', 'codes'];

/** The code of a colour and a shape in 'codes' grids: A–L, colours major (red circle A, red square B, …). */
export function gridCode(color: ColorName, shape: ShapeName): string {
  return 'ABCDEFGHIJKL'[COLORS.indexOf(color) * SHAPES.length + SHAPES.indexOf(shape)];
}
export const EMPTY_CODE = 'x';

export function gridText(scene: Scene, style: GridStyle = 'words'): string {
  const empty = style === 'codes' ? EMPTY_CODE : 'empty cell';
  const cells: string[] = Array.from({ length: 9 }, () => empty);
  for (const s of scene.shapes) cells[s.row * 3 + s.col] = style === 'codes' ? gridCode(s.color, s.shape) : `${s.color} ${s.shape}`;
  return `${cells.join(' ')}.`;
}

/** Image tokens a grid description stands in for (see gridText). */
export const GRID_TOKENS: Record<GridStyle, number> = { words: 19, codes: 10 };

export interface QA { question: string; answer: string }

/** Every question the rules allow for a scene: each is asked only when its answer is determined and unique. */
export function questionPool(scene: Scene): QA[] {
  const pool: QA[] = [];
  const count = <K extends 'shape' | 'color'>(k: K, v: string) => scene.shapes.filter((s) => s[k] === v).length;
  for (const shape of SHAPES) {
    if (count('shape', shape) === 1) pool.push({ question: `What color is the ${shape}?`, answer: `${scene.shapes.find((s) => s.shape === shape)!.color}.` });
  }
  for (const color of COLORS) {
    if (count('color', color) === 1) pool.push({ question: `What shape is the ${color} one?`, answer: `${scene.shapes.find((s) => s.color === color)!.shape}.` });
  }
  pool.push({ question: 'How many shapes are there?', answer: `${NUMBER_WORDS[scene.shapes.length]}.` });
  for (const color of COLORS) {
    for (const shape of SHAPES) {
      const yes = scene.shapes.some((s) => s.color === color && s.shape === shape);
      pool.push({ question: `Is there a ${color} ${shape}?`, answer: yes ? 'yes.' : 'no.' });
    }
  }
  return pool;
}

/** Whether a "no" question names a shape or a colour the scene has (elsewhere): "Is there a red square?" beside a
 *  green square. Only the conjunction tells it from a "yes". */
export function nearMiss(scene: Scene, q: QA): boolean {
  const m = /^Is there a (\w+) (\w+)\?$/.exec(q.question);
  return !!m && q.answer === 'no.' && scene.shapes.some((s) => s.color === m[1] || s.shape === m[2]);
}

/** 1..maxTurns distinct questions: uniqueness questions first in the pool, yes/no balanced between yes and no.
 *  `nearMisses`: every "no" is a near miss where the scene allows one (the warm-up's curriculum: a model that checks
 *  only the shape or only the colour answers those wrongly, so they teach the conjunction). */
export function sampleTurns(scene: Scene, r: Rng, maxTurns: number, nearMisses = false): QA[] {
  const pool = questionPool(scene);
  const isYesNo = (q: QA) => q.question.startsWith('Is there');
  const open = pool.filter((q) => !isYesNo(q));
  const yes = pool.filter((q) => isYesNo(q) && q.answer === 'yes.');
  const allNo = pool.filter((q) => isYesNo(q) && q.answer === 'no.');
  const near = nearMisses ? allNo.filter((q) => nearMiss(scene, q)) : [];
  const no = near.length ? near : allNo;
  const turns: QA[] = [];
  const n = 1 + r.int(maxTurns);
  const take = (list: QA[]): QA | undefined => {
    const left = list.filter((q) => !turns.includes(q));
    return left.length ? left[r.int(left.length)] : undefined;
  };
  while (turns.length < n) {
    // A third of the turns are yes/no questions, each answered yes or no with equal chance.
    const q = r.next() < 1 / 3 ? take(r.next() < 0.5 ? yes : no) ?? take(open) : take(open) ?? take(yes) ?? take(no);
    if (!q) break;
    turns.push(q);
  }
  return turns;
}

/** The text-only sums: "What is a plus b?" → "c." for digits a, b. */
export function arithmeticPairs(): QA[] {
  const out: QA[] = [];
  for (let a = 0; a <= 9; a++) for (let b = 0; b <= 9; b++) out.push({ question: `What is ${a} plus ${b}?`, answer: `${a + b}.` });
  return out;
}
