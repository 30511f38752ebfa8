"""Where the demo's abstractor queries look (bench/results/demo_2026-11-26.md, session 4): a stage-1 checkpoint loaded
into the plain PyTorch reference (../shared/reference/torch_owl.py, Debian's python3-torch), one eval image, and for
each layer and query the attention mass (mean over heads) on the queries, the class token and each of the 3×3 grid
cells. Needs a ViT whose patch grid divides into the 3×3 cells (16- or 32-px patches at 96 px).

  /usr/bin/python3 bench/demo_abstractor_attention.py RUN [IMAGE_INDEX] [CHECKPOINT]
"""
import json, math, os, sys
import numpy as np, torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '../../shared/reference'))
from torch_owl import Owl, key_map, load_st  # noqa: E402

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def load(folder):
    cfg = json.load(open(f'{folder}/config.json')); m = Owl(cfg); st = load_st(f'{folder}/model.safetensors')
    with torch.no_grad():
        for k, p in key_map(m).items(): p.copy_(st[k])
    return m.eval()


def main():
    run = sys.argv[1]; idx = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    m = load(sys.argv[3] if len(sys.argv) > 3 else f'{run}/stage1/final')
    scene = [json.loads(l) for l in open(f'{run}/data/eval_scenes.jsonl')][idx]
    print('scene:', ', '.join(f"{s['color']} {s['shape']} in cell {3 * s['row'] + s['col']}" for s in scene['shapes']))
    img = torch.tensor(np.asarray(Image.open(f"{run}/data/{scene['image']}").convert('RGB')), dtype=torch.float32).permute(2, 0, 1) / 255
    g = m.cfg['vision_config']['image_size'] // m.cfg['vision_config']['patch_size']  # patches per side
    cell_of = [(p // g) * 3 // g * 3 + (p % g) * 3 // g for p in range(g * g)]
    a = m.abstractor
    with torch.no_grad():
        feats = m.vision_model(((img - CLIP_MEAN) / CLIP_STD)[None]); x = m.query_tokens
        for li, L in enumerate(a.layers):
            qn = L['norm1'](x); kv = torch.cat([qn, L['normk'](feats)], 1); d = qn.shape[-1]; Q = qn.shape[1]
            heads = lambda t: t.view(1, -1, a.h, d // a.h).transpose(1, 2)
            p = torch.softmax(heads(L['query'](qn)) @ heads(L['key'](kv)).transpose(-1, -2) / math.sqrt(d // a.h), -1)
            mass = p[0].mean(0)  # [Q, Q + 1 + patches]
            cells = torch.zeros(Q, 9)
            for pi, c in enumerate(cell_of): cells[:, c] += mass[:, Q + 1 + pi]
            print(f'layer {li}: per query, mass on the queries | class token | cells 0..8')
            for q in range(Q):
                print(f'  q{q:2d} {mass[q, :Q].sum():.2f} | {mass[q, Q]:.2f} | ' + ' '.join(f'{v:.2f}' for v in cells[q]))
            h = qn + L['out_proj']((p @ heads(L['value'](kv))).transpose(1, 2).reshape(1, -1, d))
            y = L['norm2'](h); x = h + L['w2'](L['ffn_ln'](torch.nn.functional.silu(L['w1'](y)) * L['w3'](y)))


if __name__ == '__main__':
    main()
