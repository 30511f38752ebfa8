// Image pipeline: formats, orientation (not applied, as officially), colour models, the official train/eval transforms, typed errors.
import test from 'ava';
import sharp from 'sharp';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  decodeImage, preprocessImage, randomResizedCropParams, resizeRgb, normalizeToChw, roundHalfEven, CLIP_MEAN, CLIP_STD,
} from '../../lib/data/image.ts';
import { rng, type Rng } from '../../lib/data/rng.ts';
import { ImageError } from '../../lib/data/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'owlet-img-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

/** W×H RGB bytes: left half red, right half blue, with a green top-left pixel block for orientation checks. */
function halves(w: number, h: number): Buffer {
  const b = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const o = (y * w + x) * 3;
    if (x < w / 2) b[o] = 220; else b[o + 2] = 220;
  }
  return b;
}
const raw = (data: Buffer, width: number, height: number, channels: 1 | 2 | 3 | 4 = 3) => sharp(data, { raw: { width, height, channels } });
const px = (img: { data: Buffer; width: number }, x: number, y: number) => [...img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3)];
const near = (a: number[], b: number[], tol: number) => a.every((v, i) => Math.abs(v - b[i]) <= tol);

test('PNG decodes losslessly and eval at the native size is just the CLIP normalisation', async (t) => {
  const w = 7, h = 7;
  const data = Buffer.alloc(w * h * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37) % 256;
  const file = join(dir, 'a.png');
  writeFileSync(file, await raw(data, w, h).png().toBuffer());
  const img = await decodeImage(file);
  t.deepEqual([img.width, img.height], [w, h]);
  t.deepEqual([...img.data], [...data]);
  const chw = await preprocessImage(file, { mode: 'eval', resolution: 7 });
  t.is(chw.length, 3 * 49);
  for (const [c, p] of [[0, 0], [1, 10], [2, 48]]) {
    const want = (data[p * 3 + c] / 255 - CLIP_MEAN[c]) / CLIP_STD[c];
    t.true(Math.abs(chw[c * 49 + p] - want) < 1e-6);
  }
});

test('JPEG, grayscale, gray+alpha, RGBA, 16-bit and CMYK inputs all become 3-channel RGB', async (t) => {
  const w = 16, h = 8;
  const rgb = halves(w, h);
  const jpeg = await decodeImage({ path: 'x.jpg', data: await raw(rgb, w, h).jpeg({ quality: 95 }).toBuffer() });
  t.true(near(px(jpeg, 1, 1), [220, 0, 0], 12) && near(px(jpeg, 14, 6), [0, 0, 220], 12));

  const g = Buffer.from(Array.from({ length: w * h }, (_, i) => i % 256));
  const gray = await decodeImage({ path: 'g.png', data: await raw(g, w, h, 1).png().toBuffer() });
  t.deepEqual(px(gray, 5, 2), [37, 37, 37]);

  const ga = Buffer.alloc(w * h * 2);
  for (let i = 0; i < w * h; i++) { ga[2 * i] = 90; ga[2 * i + 1] = i % 2 ? 0 : 255; }
  const grayAlpha = await decodeImage({ path: 'ga.png', data: await raw(ga, w, h, 2).png().toBuffer() });
  t.deepEqual(px(grayAlpha, 1, 0), [90, 90, 90]); // alpha dropped, not composited

  const rgba = Buffer.alloc(w * h * 4);
  for (let i = 0; i < w * h; i++) rgba.set([10, 200, 30, i % 3 ? 0 : 255], 4 * i);
  const ra = await decodeImage({ path: 'rgba.png', data: await raw(rgba, w, h, 4).png().toBuffer() });
  t.deepEqual(px(ra, 1, 0), [10, 200, 30]);

  const deep = await decodeImage({ path: '16.png', data: await raw(rgb, w, h).toColourspace('rgb16').png().toBuffer() });
  t.deepEqual(px(deep, 1, 1), [220, 0, 0]);

  const cmykBytes = await raw(rgb, w, h).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
  t.is((await sharp(cmykBytes).metadata()).space, 'cmyk');
  const cmyk = await decodeImage({ path: 'cmyk.jpg', data: cmykBytes });
  const [r, , b] = px(cmyk, 1, 1), [r2, , b2] = px(cmyk, 14, 6);
  t.true(r > 150 && b < 80 && b2 > 120 && r2 < 80, `cmyk converted to sRGB: ${px(cmyk, 1, 1)} ${px(cmyk, 14, 6)}`);
});

test('EXIF orientation is not applied, as the official loader (PIL open + convert) does not', async (t) => {
  // Stored 40×20, left half red; orientation 6 means "rotate 90° clockwise to display". PIL hands back the stored
  // pixels (only ImageOps.exif_transpose would rotate them), and so does decodeImage.
  const bytes = await raw(halves(40, 20), 40, 20).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
  t.is((await sharp(bytes).metadata()).orientation, 6);
  const img = await decodeImage({ path: 'rot.jpg', data: bytes });
  t.deepEqual([img.width, img.height], [40, 20]);
  t.true(near(px(img, 5, 10), [220, 0, 0], 16), `${px(img, 5, 10)}`);
  t.true(near(px(img, 35, 10), [0, 0, 220], 16), `${px(img, 35, 10)}`);
});

test('corrupt, empty and missing files give an ImageError naming the file', async (t) => {
  const bad = join(dir, 'corrupt.png');
  writeFileSync(bad, Buffer.from('\x89PNG\r\n\x1a\nthis is not really a png at all'));
  await t.throwsAsync(decodeImage(bad), { instanceOf: ImageError, message: /corrupt\.png.*cannot decode/ });
  const empty = join(dir, 'empty.jpg');
  writeFileSync(empty, Buffer.alloc(0));
  await t.throwsAsync(preprocessImage(empty, { mode: 'eval', resolution: 8 }), { instanceOf: ImageError, message: /empty\.jpg/ });
  const jpg = await raw(halves(32, 32), 32, 32).jpeg().toBuffer();
  // libvips words a truncated JPEG either way between runs ("premature end of JPEG file" or "Input buffer has corrupt
  // header"): what matters is the typed error naming the file.
  await t.throwsAsync(decodeImage({ path: 'cut.jpg', data: jpg.subarray(0, jpg.length >> 1) }),
    { instanceOf: ImageError, message: /cut\.jpg.*(premature end|corrupt header)/ });
  const missing = join(dir, 'nope.jpg');
  const e = await t.throwsAsync(decodeImage(missing), { instanceOf: ImageError, message: /file not found/ });
  t.is(e?.file, missing);
});

/** An Rng that replays fixed values (then repeats the last). */
function replay(values: number[]): Rng {
  let i = 0;
  const next = () => values[Math.min(i++, values.length - 1)];
  return { next, uniform: (a, b) => a + (b - a) * next(), int: (n) => Math.floor(next() * n) };
}

test('RandomResizedCrop parameters follow torchvision, including the centre-crop fallback', (t) => {
  // scale draw 0.5 → area 0.75·W·H; log-ratio draw 0.5 → aspect 1; w = h = round(sqrt(0.75·200·100)) = 122 > 100:
  // rejected; second attempt scale 0 → area 0.5 → round(sqrt(10000)) = 100 fits; top = 0, left = floor(0.5·101) = 50.
  t.deepEqual(randomResizedCropParams(200, 100, replay([0.5, 0.5, 0, 0.5, 0, 0.5])), { top: 0, left: 50, height: 100, width: 100 });
  // A very wide image never fits a crop of ratio ≤ 4/3 and half its area: centre crop h = 10, w = round(10·4/3) = 13.
  t.deepEqual(randomResizedCropParams(1000, 10, rng(1)), { top: 0, left: 493, height: 10, width: 13 });
  // A tall one: w = 10, h = round(10 / (3/4)) = 13.
  t.deepEqual(randomResizedCropParams(10, 1000, rng(2)), { top: 493, left: 0, height: 13, width: 10 });
  t.is(roundHalfEven(2.5), 2);
  t.is(roundHalfEven(3.5), 4);
  t.is(roundHalfEven(13.333), 13);
  // Random boxes stay inside the image with area ≥ half and ratio within range (up to rounding).
  const r = rng(7);
  for (let i = 0; i < 200; i++) {
    const b = randomResizedCropParams(300, 200, r);
    t.true(b.top >= 0 && b.left >= 0 && b.top + b.height <= 200 && b.left + b.width <= 300);
    t.true(b.width * b.height >= 0.5 * 300 * 200 * 0.97);
    t.true(b.width / b.height > 0.74 && b.width / b.height < 1.35);
  }
});

test('train mode is deterministic per seed, crops and flips; eval squashes the whole image', async (t) => {
  const w = 64, h = 48;
  const data = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.set([x * 4, y * 5, 128], (y * w + x) * 3);
  const src = { path: 'grad.png', data: await raw(data, w, h).png().toBuffer() };
  const a = await preprocessImage(src, { mode: 'train', resolution: 32, rng: rng(1, 2, 3) });
  const b = await preprocessImage(src, { mode: 'train', resolution: 32, rng: rng(1, 2, 3) });
  const c = await preprocessImage(src, { mode: 'train', resolution: 32, rng: rng(1, 2, 4) });
  t.deepEqual(a, b);
  t.notDeepEqual(a, c);
  // Flip with p = 1 over the full image equals the eval transform of the mirrored source.
  const full = { top: 0, left: 0, height: h, width: w };
  const img = await decodeImage(src);
  const flipped = await resizeRgb(img, 32, full, true);
  const mirrored = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.copy(mirrored, (y * w + (w - 1 - x)) * 3, (y * w + x) * 3, (y * w + x) * 3 + 3);
  const ref = await resizeRgb({ data: mirrored, width: w, height: h }, 32, null, false);
  t.deepEqual([...flipped], [...ref]);
  // Eval output = normalised bicubic squash of the whole image (x gradient spans the full width).
  const ev = await preprocessImage(src, { mode: 'eval', resolution: 32 });
  t.deepEqual(ev, normalizeToChw(await resizeRgb(img, 32, null, false), 32));
  const red = (x: number) => ev[16 * 32 + x] * CLIP_STD[0] + CLIP_MEAN[0];
  t.true(red(0) < 0.05 && red(31) > 0.9);
});
