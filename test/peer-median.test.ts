// scripts/gpu/peer-median.ts: the PyTorch peer's runs of one device call merged into medians, so that a ratio to the
// peer does not rest on one run of it.
import test from 'ava';
import { medianPeer } from '../scripts/gpu/peer-median.ts';

test('numbers become the median of the runs, nested objects key by key, strings the first run\'s', (t) => {
  const m = medianPeer([
    { gpu: 'NVIDIA H200', gemm_bf16_8192_tflops: 749.0, e2e_stage1_B16_T256: { step_ms: 84.4, mem_gb: 12.5 } },
    { gpu: 'H200 (second)', gemm_bf16_8192_tflops: 761.9, e2e_stage1_B16_T256: { step_ms: 76.1, mem_gb: 12.4 } },
    { gpu: 'H200 (third)', gemm_bf16_8192_tflops: 764.1, e2e_stage1_B16_T256: { step_ms: 79.8, mem_gb: 12.4 } },
  ]);
  t.deepEqual(m, { gpu: 'NVIDIA H200', gemm_bf16_8192_tflops: 761.9, e2e_stage1_B16_T256: { step_ms: 79.8, mem_gb: 12.4 } });
});

test('an even count takes the mean of the middle two; a key missing from a run is the median of those that have it', (t) => {
  const m = medianPeer([{ a: 1, b: { x: 10 } }, { a: 4, b: { x: 30, y: 5 } }]);
  t.deepEqual(m, { a: 2.5, b: { x: 20, y: 5 } });
});

test('one run comes back unchanged, and none is an error', (t) => {
  const run = { torch: '2.11.0', sdpa_vit_L14_b64: { fwd_ms: 0.154, fwd_tflops: 112.7 } };
  t.deepEqual(medianPeer([run]), run);
  t.throws(() => medianPeer([]), { message: /no peer runs/ });
});
