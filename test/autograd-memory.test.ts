// Memory between the forward and the backward: the tape frees what an op saved as soon as backward has passed that
// op, and a training forward leaves nothing alive but what the tape saved (plus its logits and loss), so a stage-1
// step peaks below "every activation + every gradient" (which is where it peaked while the saved activations lived
// until the whole backward ended).
import test from 'ava';
import { MplugOwl, initParams, parseOwlConfig } from '../lib/model/index.ts';
import { cpu } from '../lib/native.ts';
import {
  backward, bytesInUse, quickGelu, record, scale, scope, scopeOwned, tapeSaved, tensor, Tensor,
} from '../lib/tensor/index.ts';
import { syntheticBatch } from '../bench/synthetic-batch.ts';

test('backward frees what each op saved once it has passed that op', (t) => {
  scope(() => {
    const n = 4096, x = tensor(new Float32Array(n).fill(0.5), [n], { requiresGrad: true });
    // A probe at the bottom of the chain notes the bytes in use when backward reaches it, i.e. after every
    // quickGelu's backward has run.
    let atProbe = 0;
    const p = scale(x, 1);
    record('probe', [x], [p], [], ([g]) => { atProbe = bytesInUse('cpu'); return [g!.share()]; });
    let h = p;
    for (let i = 0; i < 4; i++) {
      const next = quickGelu(h);
      if (h !== p) h.dispose(); // the caller is done with it; only the tape may still hold it
      h = next;
    }
    const seed = tensor(new Float32Array(n).fill(1), [n]);
    const atLoss = bytesInUse('cpu');
    backward(h, seed);
    // Saved by the last three quickGelus: three [n] f32 inputs, released before the probe runs; in flight there is
    // one gradient of that size.
    t.true(atProbe <= atLoss - 2 * n * 4, `bytes at the probe ${atProbe}, at the loss ${atLoss}`);
  });
});

test('a stage-1 forward leaves only what the tape saved; the step peaks below activations + gradients', (t) => {
  const c = parseOwlConfig({
    num_query_tokens: 8,
    vision_config: { hidden_size: 64, intermediate_size: 256, num_hidden_layers: 2, num_attention_heads: 2, image_size: 56, patch_size: 14, layer_norm_eps: 1e-6 },
    visual_abstractor_config: { hidden_size: 64, encoder_hidden_size: 64, intermediate_size: 160, num_hidden_layers: 1, num_attention_heads: 2, layer_norm_eps: 1e-6, attention_probs_dropout_prob: 0 },
    text_config: { hidden_size: 96, intermediate_size: 256, num_hidden_layers: 3, num_attention_heads: 3, vocab_size: 32000, rms_norm_eps: 1e-6 },
  });
  const params = initParams(c, { seed: 1, std: 0.05 });
  const m = new MplugOwl(c, params, null);
  m.setTrainable(['vision', 'queries', 'abstractor']);
  const batch = syntheticBatch({ batch: 3, length: 40, resolution: 56, media: c.mediaTokenLength });
  const be = cpu();
  const paramIds = new Set([...params.values()].map((p) => p.handle.storageId));
  const gradBytes = [...m.trainable().values()].reduce((a, p) => a + p.handle.nbytes, 0);
  const base = bytesInUse('cpu');
  scope(() => {
    be.resetPeakMemory();
    const { loss, logits } = m.forward(batch, { training: true, logits: 'counted' });
    const held = bytesInUse('cpu') - base;
    const tapeIds = new Set(tapeSaved().flatMap((n) => n.saved.map((s) => s.handle.storageId)).filter((id) => !paramIds.has(id)));
    const loose = scopeOwned().filter((x): x is Tensor => x instanceof Tensor && !tapeIds.has(x.handle.storageId) && !paramIds.has(x.handle.storageId));
    t.deepEqual(loose.map((x) => x.handle.storageId).sort(), [loss.handle.storageId, logits.handle.storageId].sort(),
      `held by the step's scope besides the tape: ${loose.map((x) => x.describe()).join(', ')}`);
    // No frozen LLaMA linear keeps its input: every saved [rows, 256] (the LLaMA MLP width) belongs to the SwiGLU.
    const mlpInputs = tapeSaved().filter((n) => n.op === 'linear').flatMap((n) => n.saved).filter((s) => s.shape.at(-1) === 256 && !paramIds.has(s.handle.storageId));
    t.is(mlpInputs.length, 0);
    backward(loss);
    const peak = be.memory().peakBytes - base;
    t.true(peak < held + gradBytes, `peak ${peak} B; held at the loss ${held} B + gradients ${gradBytes} B`);
    logits.dispose();
  });
  for (const p of m.trainable().values()) { p.grad?.dispose(); p.grad = null; }
  batch.pixelValues?.dispose();
  for (const p of params.values()) p.dispose();
});
