// scripts/gpu/harness.ts's variant switches: withEnv sets and restores them, and refuses the ones OWLET_SKIP_ENV names
// (what run.sh's smoke stage sets when a kernel not yet run on a GPU failed or hung there); loraEnv maps a LoRA
// benchmark or check variant to its switches.
import test from 'ava';
import { loraEnv, withEnv } from '../scripts/gpu/harness.ts';

test('withEnv sets the variables for the call and restores them (or their absence) after', (t) => {
  delete process.env.OWLET_TEST_A;
  process.env.OWLET_TEST_B = 'before';
  const seen = withEnv({ OWLET_TEST_A: 'x', OWLET_TEST_B: 'y' }, () => [process.env.OWLET_TEST_A, process.env.OWLET_TEST_B]);
  t.deepEqual(seen, ['x', 'y']);
  t.is(process.env.OWLET_TEST_A, undefined);
  t.is(process.env.OWLET_TEST_B, 'before');
  delete process.env.OWLET_TEST_B;
});

test('a setting named in OWLET_SKIP_ENV throws "skipped" before anything runs; others go through', (t) => {
  process.env.OWLET_SKIP_ENV = 'OWLET_ATTN_BWD=wgmma-ws,OWLET_LORA_GEMM=fused';
  try {
    let ran = false;
    t.throws(() => withEnv({ OWLET_LORA_GEMM: 'fused' }, () => { ran = true; }), { message: /^skipped: OWLET_LORA_GEMM=fused/ });
    t.false(ran);
    t.is(process.env.OWLET_LORA_GEMM, undefined);
    t.is(withEnv({ OWLET_LORA_GEMM: 'cublas' }, () => process.env.OWLET_LORA_GEMM), 'cublas');
    t.is(withEnv({ OWLET_ATTN_BWD: 'wgmma' }, () => 1), 1);
  } finally {
    delete process.env.OWLET_SKIP_ENV;
  }
});

test('loraEnv: thin and mma pick the thin products, fused, fused3 and cublas the GEMM path, gypass and gycublas the products over gy, + joins, none nothing', (t) => {
  t.deepEqual(loraEnv(''), {});
  t.deepEqual(loraEnv('thin'), { OWLET_LORA: 'thin' });
  t.deepEqual(loraEnv('mma'), { OWLET_LORA: 'mma' });
  t.deepEqual(loraEnv('fused'), { OWLET_LORA_GEMM: 'fused' });
  t.deepEqual(loraEnv('cublas'), { OWLET_LORA_GEMM: 'cublas' });
  t.deepEqual(loraEnv('gypass'), { OWLET_LORA_GY: 'pass' });
  t.deepEqual(loraEnv('fused+gypass'), { OWLET_LORA_GEMM: 'fused', OWLET_LORA_GY: 'pass' });
  t.deepEqual(loraEnv('fusedl'), { OWLET_LORA_GEMM: 'fused-l' });
  t.deepEqual(loraEnv('fused3'), { OWLET_LORA_GEMM: 'fused', OWLET_LORA_GEMM_STAGES: '3' });
  t.deepEqual(loraEnv('fusedwarp'), { OWLET_LORA_GEMM: 'fused', OWLET_LORA_GEMM_EPILOGUE: 'warp' });
  t.deepEqual(loraEnv('fusedl+overlap'), { OWLET_LORA_GEMM: 'fused-l', OWLET_LORA_GEMM_EPILOGUE: 'overlap' });
  t.deepEqual(loraEnv('fused+ring'), { OWLET_LORA_GEMM: 'fused', OWLET_LORA_GEMM_EPILOGUE: 'ring' });
  t.deepEqual(loraEnv('fusedl+ring+split'), { OWLET_LORA_GEMM: 'fused-l', OWLET_LORA_GEMM_EPILOGUE: 'ring', OWLET_LORA_GEMM_SPLIT: '1' });
  t.deepEqual(loraEnv('cublas+gycublas'), { OWLET_LORA_GEMM: 'cublas', OWLET_LORA_GY: 'cublas' });
  // (ownl: OWLET_LORA_GEMM left unset, so that the OWN_L kernels are timed against the rest rather than forced)
  t.deepEqual(loraEnv('ownl+ring+split'), { OWLET_LORA_GEMM_OWN_L: '1', OWLET_LORA_GEMM_EPILOGUE: 'ring', OWLET_LORA_GEMM_SPLIT: '1' });
});
