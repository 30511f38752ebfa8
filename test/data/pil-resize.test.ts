// Pillow's bicubic resize reproduced byte for byte (lib/data/pil-resize.ts) against Pillow 9.4's own output on seeded
// noise (test/fixtures/pil-bicubic.json, written by scripts/make-pil-resize-fixture.py): enlarging, nearly 1:1,
// shrinking 3× and 6× (antialiased), one axis only, degenerate sources, a torchvision crop then resize, and three
// 224-px cases by hash. And the whole image pipeline through it.
import test from 'ava';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { resizeBicubicPil } from '../../lib/data/pil-resize.ts';
import { preprocessImage, CLIP_MEAN, CLIP_STD } from '../../lib/data/image.ts';

interface Case { name: string; width: number; height: number; seed: number; crop: [number, number, number, number] | null; size: number; sha256: string; rgb?: string }
const fixture = JSON.parse(readFileSync(join(import.meta.dirname, '../fixtures/pil-bicubic.json'), 'utf8')) as { pillow: string; cases: Case[] };

function noise(w: number, h: number, seed: number): Uint8Array {
  const out = new Uint8Array(w * h * 3);
  let s = seed;
  for (let i = 0; i < out.length; i++) { s = (Math.imul(s, 1103515245) + 12345) >>> 0; out[i] = (s >>> 16) & 255; }
  return out;
}

function crop(src: Uint8Array, w: number, [left, top, cw, ch]: [number, number, number, number]): Uint8Array {
  const out = new Uint8Array(cw * ch * 3);
  for (let y = 0; y < ch; y++) out.set(src.subarray(((top + y) * w + left) * 3, ((top + y) * w + left + cw) * 3), y * cw * 3);
  return out;
}

for (const c of fixture.cases) {
  test(`Pillow ${fixture.pillow} bicubic, byte for byte: ${c.name}`, (t) => {
    let src = noise(c.width, c.height, c.seed), w = c.width, h = c.height;
    if (c.crop) { src = crop(src, w, c.crop); [w, h] = [c.crop[2], c.crop[3]]; }
    const got = resizeBicubicPil(src, w, h, c.size, c.size);
    if (c.rgb) {
      const want = Buffer.from(c.rgb, 'base64');
      let diff = 0, worst = 0;
      for (let i = 0; i < want.length; i++) { const d = Math.abs(got[i] - want[i]); if (d) diff++; worst = Math.max(worst, d); }
      t.is(diff, 0, `${diff} of ${want.length} bytes differ, by up to ${worst}`);
    }
    t.is(createHash('sha256').update(got).digest('hex'), c.sha256);
  });
}

test('the eval pipeline is Pillow resize then CLIP normalisation, on the decoded pixels', async (t) => {
  const c = fixture.cases.find((x) => x.name === 'enlarge 20x15')!;
  const png = await sharp(Buffer.from(noise(c.width, c.height, c.seed)), { raw: { width: c.width, height: c.height, channels: 3 } }).png().toBuffer();
  const chw = await preprocessImage({ path: 'noise.png', data: png }, { mode: 'eval', resolution: 32 });
  const want = Buffer.from(c.rgb!, 'base64');
  let worst = 0;
  for (let p = 0; p < 32 * 32; p++) {
    for (let ch = 0; ch < 3; ch++) worst = Math.max(worst, Math.abs(chw[ch * 1024 + p] - (want[p * 3 + ch] / 255 - CLIP_MEAN[ch]) / CLIP_STD[ch]));
  }
  t.true(worst < 1e-5, `worst ${worst}`);
});
