// Image preprocessing with sharp (libvips decodes on its own threads, so awaiting here overlaps the training step).
// Mirrors the official processors (spec §4.6):
//   decode: any format libvips reads, then RGB like PIL's `convert('RGB')` (alpha dropped without compositing,
//           grayscale replicated, CMYK converted to sRGB); the stored pixels, EXIF orientation NOT applied: the
//           official loader is `Image.open(p).convert('RGB')`, and PIL does not apply it (ImageOps.exif_transpose
//           would), so a phone photo tagged "rotate 90°" is trained on as stored;
//   eval:   squash-resize to R×R, Pillow's bicubic byte for byte (pil-resize.ts; libvips' cubic differed from it);
//   train:  torchvision RandomResizedCrop(R, scale=(0.5, 1), ratio=(3/4, 4/3), bicubic) then a horizontal flip with
//           p = 0.5, drawn from a seeded Rng;
//   then ToTensor (÷255) and Normalize with the OpenAI CLIP mean/std, as a CHW Float32Array.
// Deviation: a truncated file is an ImageError here (sharp failOn 'error'); the official loader sets PIL's
// LOAD_TRUNCATED_IMAGES and trains on the partly grey image. Skipping it is the safer default.
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { ImageError } from './errors.ts';
import { resizeBicubicPil } from './pil-resize.ts';
import type { Rng } from './rng.ts';

export const CLIP_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** A path, or a path (used in messages) with the encoded bytes already in memory. */
export type ImageSource = string | { path: string; data: Uint8Array };

export interface RgbImage { data: Buffer; width: number; height: number }

/** Crop box in pixels of the decoded image (torchvision's i, j, h, w). */
export interface CropBox { top: number; left: number; height: number; width: number }

export interface AugmentOptions {
  /** Area fraction range of RandomResizedCrop (official: 0.5–1). */
  scale?: readonly [number, number];
  /** Aspect-ratio range (official: torchvision's default 3/4–4/3). */
  ratio?: readonly [number, number];
  /** Probability of a horizontal flip (official: 0.5). */
  flipP?: number;
}

export interface PreprocessOptions extends AugmentOptions {
  /** Output side R (224 for mPLUG-Owl). */
  resolution: number;
  /** 'train': random resized crop + flip from `rng`; 'eval': plain squash resize. */
  mode: 'train' | 'eval';
  rng?: Rng;
  mean?: readonly number[];
  std?: readonly number[];
}

const pathOf = (src: ImageSource): string => (typeof src === 'string' ? src : src.path);

async function bytesOf(src: ImageSource): Promise<Uint8Array> {
  if (typeof src !== 'string') return src.data;
  try {
    return await readFile(src);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ImageError(src, code === 'ENOENT' ? 'file not found' : `cannot read (${(e as Error).message})`);
  }
}

/**
 * The most pixels an image may have: PIL's decompression-bomb limit, 2 × Image.MAX_IMAGE_PIXELS (= 2 × 89,478,485).
 * Image.open raises DecompressionBombError above it, so the official loader skips such a sample. (sharp's own default,
 * 16383², let a ~1 MB PNG declaring 15000×15000 through to be decoded into 675 MB, several times over with prefetch.)
 */
export const MAX_IMAGE_PIXELS = 2 * 89_478_485;

/** Decodes to 8-bit RGB at full size as stored (PIL: `Image.open(p).convert('RGB')`, no EXIF orientation). */
export async function decodeImage(src: ImageSource): Promise<RgbImage> {
  const bytes = await bytesOf(src);
  try {
    const { data, info } = await sharp(bytes, { failOn: 'error', limitInputPixels: MAX_IMAGE_PIXELS })
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { data, width: info.width, height: info.height };
  } catch (e) {
    if (/exceeds pixel limit/.test((e as Error).message)) throw new ImageError(pathOf(src), await tooLarge(bytes));
    throw new ImageError(pathOf(src), `cannot decode (${(e as Error).message})`);
  }
}

async function tooLarge(bytes: Uint8Array): Promise<string> {
  const m = await sharp(bytes, { limitInputPixels: false }).metadata().catch(() => null);
  const size = m?.width && m.height ? `${m.width}×${m.height} = ${(m.width * m.height).toLocaleString('en-US')} pixels, ` : '';
  return `too large (${size}more than ${MAX_IMAGE_PIXELS.toLocaleString('en-US')}: a decompression bomb to PIL, which the official loader skips)`;
}

/** Python's round(): halves go to the even neighbour (torchvision computes crop sizes with it). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** torchvision RandomResizedCrop.get_params: 10 attempts, then a centre crop clamped to the ratio range. */
export function randomResizedCropParams(width: number, height: number, r: Rng, scale: readonly [number, number] = [0.5, 1],
  ratio: readonly [number, number] = [3 / 4, 4 / 3]): CropBox {
  const area = width * height;
  const logLo = Math.log(ratio[0]), logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * r.uniform(scale[0], scale[1]);
    const aspect = Math.exp(r.uniform(logLo, logHi));
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = r.int(height - h + 1);
      const left = r.int(width - w + 1);
      return { top, left, height: h, width: w };
    }
  }
  const inRatio = width / height;
  let w: number, h: number;
  if (inRatio < Math.min(...ratio)) { w = width; h = roundHalfEven(w / Math.min(...ratio)); }
  else if (inRatio > Math.max(...ratio)) { h = height; w = roundHalfEven(h * Math.max(...ratio)); }
  else { w = width; h = height; }
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), height: h, width: w };
}

/** Crops (optional), resizes to R×R with Pillow's bicubic without keeping the aspect ratio (torchvision: crop, then
 *  resize), flips (optional): R×R×3 bytes. */
export async function resizeRgb(img: RgbImage, resolution: number, crop: CropBox | null, flip: boolean, what = 'image'): Promise<Uint8Array> {
  try {
    let src: Uint8Array = img.data, w = img.width, h = img.height;
    if (crop) {
      const { top, left, width, height } = crop;
      if (top < 0 || left < 0 || width < 1 || height < 1 || left + width > w || top + height > h) {
        throw new Error(`crop ${width}×${height} at (${left}, ${top}) outside the ${w}×${h} image`);
      }
      const cut = new Uint8Array(width * height * 3);
      for (let y = 0; y < height; y++) cut.set(src.subarray(((top + y) * w + left) * 3, ((top + y) * w + left + width) * 3), y * width * 3);
      [src, w, h] = [cut, width, height];
    }
    const out = resizeBicubicPil(src, w, h, resolution, resolution);
    if (flip) {
      const row = resolution * 3;
      for (let y = 0; y < resolution; y++) {
        for (let x = 0, o = y * row; x < resolution >> 1; x++) {
          const a = o + x * 3, b = o + (resolution - 1 - x) * 3;
          for (let c = 0; c < 3; c++) { const t = out[a + c]; out[a + c] = out[b + c]; out[b + c] = t; }
        }
      }
    }
    return out;
  } catch (e) {
    throw new ImageError(what, `cannot resize (${(e as Error).message})`);
  }
}

/** HWC bytes → CHW floats, (x/255 − mean)/std. */
export function normalizeToChw(hwc: Uint8Array, resolution: number, mean: readonly number[] = CLIP_MEAN,
  std: readonly number[] = CLIP_STD, out = new Float32Array(3 * resolution * resolution)): Float32Array {
  const plane = resolution * resolution;
  for (let c = 0; c < 3; c++) {
    const m = mean[c], inv = 1 / (255 * std[c]), bias = m / std[c];
    for (let p = 0; p < plane; p++) out[c * plane + p] = hwc[p * 3 + c] * inv - bias;
  }
  return out;
}

/** The whole pipeline for one image: a CHW Float32Array of 3·R·R values. Throws ImageError naming the file. */
export async function preprocessImage(src: ImageSource, o: PreprocessOptions): Promise<Float32Array> {
  if (!Number.isInteger(o.resolution) || o.resolution < 1) throw new ImageError(pathOf(src), `resolution must be a positive integer, got ${JSON.stringify(o.resolution)}`);
  const img = await decodeImage(src);
  let crop: CropBox | null = null, flip = false;
  if (o.mode === 'train') {
    if (!o.rng) throw new ImageError(pathOf(src), 'train-mode preprocessing needs an rng');
    crop = randomResizedCropParams(img.width, img.height, o.rng, o.scale, o.ratio);
    flip = o.rng.next() < (o.flipP ?? 0.5);
  }
  const hwc = await resizeRgb(img, o.resolution, crop, flip, pathOf(src));
  return normalizeToChw(hwc, o.resolution, o.mean, o.std);
}
