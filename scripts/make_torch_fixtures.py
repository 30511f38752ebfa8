#!/usr/bin/python3
# Generates the small torch.save fixtures of test/fixtures/torch/ (committed; a few KB each). Needs Debian's
# python3-torch: /usr/bin/python3 scripts/make_torch_fixtures.py
# Values are arange-based so the tests can recompute every expected number without torch.
import collections
import json
import os
import pickle
import sys
import zipfile

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'torch')
os.makedirs(OUT, exist_ok=True)


def state_dict():
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(6, dtype=torch.float32).view(2, 3) / 4)
        lin.bias.copy_(torch.tensor([-1.0, 0.5]))
    sd = lin.state_dict()  # an OrderedDict with a _metadata attribute (pickled through BUILD)
    sd['half'] = (torch.arange(5, dtype=torch.float32) / 3).half()
    sd['bf16'] = (torch.arange(5, dtype=torch.float32) / 3 - 1).bfloat16()
    sd['long'] = torch.tensor([1, -1, 40000000000], dtype=torch.int64)
    sd['int'] = torch.tensor([[7, -8], [2147483647, 0]], dtype=torch.int32)
    sd['byte'] = torch.tensor([0, 1, 255], dtype=torch.uint8)
    sd['bool'] = torch.tensor([True, False, True])
    sd['double'] = torch.tensor([0.1, -2.0], dtype=torch.float64)
    base = torch.arange(24, dtype=torch.float32)
    sd['shared.a'] = base[2:8].view(2, 3)  # one storage, two views at different offsets
    sd['shared.b'] = base[10:14]
    sd['transposed'] = torch.arange(12, dtype=torch.float32).view(3, 4).t()  # strides (1, 4)
    sd['strided'] = torch.arange(20, dtype=torch.float32).view(4, 5)[1:, ::2]  # offset 5, strides (5, 2)
    sd['scalar'] = torch.tensor(3.5)
    sd['empty'] = torch.zeros(0, 4)
    sd['param'] = torch.nn.Parameter(torch.tensor([[1.0, 2.0]]))  # pickled through _rebuild_parameter
    return sd


def rezip(src, dst, compression=zipfile.ZIP_STORED, force_zip64=False):
    """Copies a torch.save archive entry by entry with Python's zipfile (ZIP64 forced by lowering the limit)."""
    saved = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
    if force_zip64:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 1, 1
    try:
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w', compression) as zout:
            for info in zin.infolist():
                zout.writestr(info.filename, zin.read(info.filename))
    finally:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = saved


class Evil:
    def __reduce__(self):
        return (os.system, ('echo owlet-must-never-run-this',))


def main():
    sd = state_dict()
    torch.save(sd, os.path.join(OUT, 'state_dict.bin'))
    # What torch itself says is in the file, for the reader's tests (values of f16/bf16 are exact in a double).
    expected = {k: {'dtype': str(v.dtype).replace('torch.', ''), 'shape': list(v.shape),
                    'values': v.detach().flatten().tolist() if v.dtype in (torch.int64, torch.int32, torch.uint8, torch.bool)
                    else v.detach().double().flatten().tolist()} for k, v in sd.items()}
    with open(os.path.join(OUT, 'state_dict.expected.json'), 'w') as f:
        json.dump(expected, f, indent=1)
    rezip(os.path.join(OUT, 'state_dict.bin'), os.path.join(OUT, 'zip64.bin'), force_zip64=True)
    rezip(os.path.join(OUT, 'state_dict.bin'), os.path.join(OUT, 'deflated.bin'), zipfile.ZIP_DEFLATED)
    torch.save({'w': torch.ones(2)}, os.path.join(OUT, 'legacy.bin'), _use_new_zipfile_serialization=False)

    # A pickle that would run a shell command if unpickled by Python, inside a torch-shaped zip.
    with zipfile.ZipFile(os.path.join(OUT, 'evil.bin'), 'w') as z:
        z.writestr('evil/data.pkl', pickle.dumps(collections.OrderedDict(x=Evil()), protocol=2))
        z.writestr('evil/version', '3\n')

    # A sharded checkpoint in HF's layout.
    shard_dir = os.path.join(OUT, 'sharded')
    os.makedirs(shard_dir, exist_ok=True)
    shards = [collections.OrderedDict(a=torch.arange(6, dtype=torch.float32).view(2, 3)),
              collections.OrderedDict(b=torch.tensor([5, 6], dtype=torch.int64), c=torch.ones(4).bfloat16())]
    weight_map = {}
    for i, s in enumerate(shards):
        name = f'pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin'
        torch.save(s, os.path.join(shard_dir, name))
        weight_map.update({k: name for k in s})
    with open(os.path.join(shard_dir, 'pytorch_model.bin.index.json'), 'w') as f:
        json.dump({'metadata': {'total_size': 24 + 16 + 8}, 'weight_map': weight_map}, f, indent=2)

    # PEFT's older adapter layout: adapter_model.bin (torch.save) + adapter_config.json, r = 2 on q_proj/v_proj of a
    # 1-layer LLaMA of width 6.
    adapter_dir = os.path.join(OUT, 'adapter_bin')
    os.makedirs(adapter_dir, exist_ok=True)
    lora = collections.OrderedDict()
    for p in ['q_proj', 'v_proj']:
        m = f'base_model.model.language_model.model.layers.0.self_attn.{p}'
        lora[f'{m}.lora_A.weight'] = torch.arange(12, dtype=torch.float32).view(2, 6) / 8
        lora[f'{m}.lora_B.weight'] = -torch.arange(12, dtype=torch.float32).view(6, 2) / 8
    torch.save(lora, os.path.join(adapter_dir, 'adapter_model.bin'))
    with open(os.path.join(adapter_dir, 'adapter_config.json'), 'w') as f:
        json.dump({'peft_type': 'LORA', 'r': 2, 'lora_alpha': 4, 'lora_dropout': 0.05,
                   'target_modules': ['q_proj', 'v_proj'], 'bias': 'none', 'task_type': None}, f, indent=2)

    # Cross-check: torch reads back what it wrote (the re-zipped copies are checked with Python's zipfile only:
    # torch's own reader insists on its aligned layout).
    back = torch.load(os.path.join(OUT, 'state_dict.bin'))
    for k, v in sd.items():
        assert torch.equal(back[k], v) and back[k].dtype == v.dtype, k
    for name in ['zip64.bin', 'deflated.bin']:
        with zipfile.ZipFile(os.path.join(OUT, 'state_dict.bin')) as a, zipfile.ZipFile(os.path.join(OUT, name)) as b:
            assert all(a.read(n) == b.read(n) for n in a.namelist()), name
    print('torch', torch.__version__, 'fixtures written to', os.path.normpath(OUT), file=sys.stderr)


if __name__ == '__main__':
    main()
