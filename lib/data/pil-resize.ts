// Pillow's bicubic resize, bit for bit: what the official pipeline's `img.resize((224, 224), BICUBIC)` and
// torchvision's RandomResizedCrop (crop, then that resize) compute (spec §4.6). libvips' cubic kernel (sharp), used
// before, differed from it by 9–42 grey levels on average when enlarging (a sub-pixel offset and another kernel) and by
// 1.5–3.5 when shrinking 4× or more (a box pre-shrink): the data audit of session 10, against Debian's Pillow 9.4.
//
// Pillow's algorithm (libImaging/Resample.c, unchanged since Pillow 4.x): a separable filter, horizontal pass then
// vertical, each output pixel a weighted sum over a window of the source scaled by max(1, in/out) (antialiasing when
// shrinking), the cubic kernel with a = −0.5, weights normalised per pixel and rounded to 22-bit fixed point, sums
// rounded and clamped to 8 bits after each pass. A pass whose axis keeps its size is skipped, as Pillow skips it.
// Every operation below is done in the same order on doubles (exact for these integer sums), so results match.

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

function bicubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Coeffs { ksize: number; bounds: Int32Array; kk: Int32Array }

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis: window start and length per output pixel, and
 *  its fixed-point weights. */
function coeffs(inSize: number, in0: number, in1: number, outSize: number): Coeffs {
  const scale = (Math.fround(in1) - Math.fround(in0)) / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 2 * filterscale; // the bicubic filter's support is 2
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2), kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale, ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) { w[x] = bicubic((x + xmin - center + 0.5) * ss); ww += w[x]; }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

/** `in >> 22` clamped to a byte (Pillow's clip8). */
function clip8(v: number): number {
  const q = Math.floor(v / ONE);
  return q < 0 ? 0 : q > 255 ? 255 : q;
}

/**
 * Resizes packed 8-bit RGB (rows of `width` pixels) to outW × outH exactly as Pillow's
 * `Image.resize((outW, outH), Image.BICUBIC)` does for an RGB image.
 */
export function resizeBicubicPil(src: Uint8Array, width: number, height: number, outW: number, outH: number): Uint8Array {
  const channels = 3;
  if (src.length !== width * height * channels) {
    throw new RangeError(`resizeBicubicPil: ${src.length} bytes for ${width}×${height} RGB`);
  }
  if (outW === width && outH === height) return src.slice();
  const needH = outW !== width, needV = outH !== height;
  const horiz = coeffs(width, 0, width, outW), vert = coeffs(height, 0, height, outH);
  let img = src, w = width;
  const vb = vert.bounds;
  if (needH) {
    // only the rows the vertical pass reads
    const first = vb[0], last = vb[(outH - 1) * 2] + vb[(outH - 1) * 2 + 1];
    if (needV) for (let i = 0; i < outH; i++) vb[i * 2] -= first;
    const rows = needV ? last - first : height, off = needV ? first : 0;
    const out = new Uint8Array(outW * rows * channels), { ksize, bounds, kk } = horiz;
    for (let y = 0; y < rows; y++) {
      const rowIn = (y + off) * width * channels, rowOut = y * outW * channels;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1], k0 = xx * ksize, o = rowOut + xx * channels;
        // (a pixel's three sums in one loop: about twice as fast as a loop per channel)
        let s0 = HALF, s1 = HALF, s2 = HALF;
        for (let x = 0, p = rowIn + xmin * 3; x < xmax; x++, p += 3) {
          const k = kk[k0 + x];
          s0 += src[p] * k; s1 += src[p + 1] * k; s2 += src[p + 2] * k;
        }
        out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
      }
    }
    img = out;
    w = outW;
  }
  if (!needV) return img;
  const out = new Uint8Array(w * outH * channels), { ksize, kk } = vert, row = w * channels;
  const acc = new Float64Array(row);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = vb[yy * 2], ymax = vb[yy * 2 + 1], k0 = yy * ksize;
    // row by row (contiguous reads) into one accumulator row: the same sums, in the same order per pixel
    acc.fill(HALF);
    for (let y = 0; y < ymax; y++) {
      const k = kk[k0 + y], base = (y + ymin) * row;
      for (let i = 0; i < row; i++) acc[i] += img[base + i] * k;
    }
    for (let i = 0; i < row; i++) out[yy * row + i] = clip8(acc[i]);
  }
  return out;
}
