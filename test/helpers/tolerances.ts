// The one tolerance table. Error metric everywhere: max |got - want| / max(max |want|, floor) (relative max error).
// Each entry says why it is what it is.
export interface Tol { rel: number; floor: number; why: string }

export const TOL = {
  // fp32 kernels against a float64 reference of the same maths: a few ulps of accumulated rounding over short sums.
  f32Forward: { rel: 2e-5, floor: 1e-3, why: 'fp32 rounding in sums of up to a few hundred terms' },
  // Analytic fp32 gradients against central finite differences of the float64 reference (h = 1e-6, error ~1e-10):
  // the fp32 backward's own rounding dominates.
  f32Grad: { rel: 1e-4, floor: 1e-3, why: 'fp32 backward accumulates more terms than the forward (GEMM transposes, reductions)' },
  // RoPE forward: two fp32 products and one add per element, with cos/sin rounded to fp32 exactly as the reference
  // does, so the only difference from the float64 formula is a few fp32 roundings of O(1) values.
  rope: { rel: 1e-6, floor: 1e-3, why: 'elementwise rotation: 3 fp32 roundings, cos/sin tables identical to the reference' },
  // Whole-model parity with the official fixtures (issue 3): the fixture README's bound.
  fixture: { rel: 1e-4, floor: 1e-4, why: 'fixture README: official fp32 code vs any faithful fp32 re-implementation' },
  // bf16 storage round trip: 8 bits of mantissa, round to nearest even -> half an ulp = 2^-9.
  bf16Storage: { rel: 2 ** -8, floor: 1e-3, why: 'bf16 keeps 8 significant bits' },
  // The CUDA backend against the CPU backend (or a float64 reference) on the GPU machine (scripts/gpu/check.ts).
  cudaF32: { rel: 1e-4, floor: 1e-3, why: 'fp32 on the GPU: other summation orders, fused multiply-adds and ~2-ulp exp/log than the CPU; no TF32' },
  // bf16 inputs (the reference sees the same rounded values) and bf16 outputs: every stored result is rounded to 8
  // significant bits (2^-9 relative, 4e-3 of the largest value at worst after one more rounding), with fp32 sums.
  cudaBf16: { rel: 1e-2, floor: 1e-2, why: 'bf16 outputs: 2^-9 relative rounding of each stored value, fp32 accumulation' },
  // Gradients through bf16 intermediates that the tensor cores consume (attention's P and dS, LoRA's gy·B and xa):
  // two or three more 2^-9 roundings compound in the sums.
  cudaBf16Grad: { rel: 2.5e-2, floor: 1e-2, why: 'bf16 intermediates (attention P and dS, LoRA gy·B) feed further products' },
  // f32 AdamW against a float64 AdamW over a few steps: each step rounds p, m, v once per operation (~6e-8 each), and
  // the update m/(sqrt(v)+eps) amplifies the relative error of m and v by at most ~2 (measured: 1.1e-7).
  adamwSteps: { rel: 5e-7, floor: 1e-3, why: 'f32 AdamW vs float64 over 5 steps: a few ulps per step' },
  // Integer results (argmax indices): equal, whatever their magnitude (max |index| < 1e9).
  indices: { rel: 1e-9, floor: 1, why: 'indices are exact or wrong' },
  // The trainer on CUDA against the trainer on the CPU, owl-tiny, a few AdamW steps (scripts/gpu/train-check.ts):
  // per step the loss; the gradient norm gets 5× (it goes through the backward too: twice the roundings, squared).
  // fp32: the fixture's bound for one forward/backward; the updates lr·m/√v move a weight by ~lr × the gradient's
  // relative difference, so a few steps keep it.
  trainF32: { rel: 1e-4, floor: 1e-6, why: 'fp32 both sides: the fixture bound, kept over a few AdamW steps' },
  // bf16: activations and the weights' working copies are stored with 8 significant bits (2^-9 relative each), along
  // ~30 stored intermediates from pixels to loss with fp32 sums inside the kernels; the loss, a mean over ~100
  // targets, lands near one such rounding (expected ~1e-3), the bound leaves room for the gradient-driven steps.
  trainBf16: { rel: 1e-2, floor: 1e-6, why: 'bf16 storage of activations and weight copies (2^-9 per value), fp32 accumulation and masters' },
} satisfies Record<string, Tol>;

export function relMaxError(got: ArrayLike<number>, want: ArrayLike<number>, floor: number): number {
  if (got.length !== want.length) return Infinity;
  let diff = 0, mag = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= diff)) diff = Number.isNaN(d) ? Infinity : Math.max(diff, d);
    mag = Math.max(mag, Math.abs(want[i]));
  }
  return diff / Math.max(mag, floor);
}
