#!/usr/bin/python3
# Writes test/fixtures/pil-bicubic.json: Pillow's bicubic resize of seeded noise images (the official pipeline's
# `img.resize((R, R), Image.BICUBIC)`, and torchvision's crop-then-resize), which lib/data/pil-resize.ts must
# reproduce byte for byte (test/data/pil-resize.test.ts). Run with Debian's python3-pil:
#   /usr/bin/python3 scripts/make-pil-resize-fixture.py
import base64, hashlib, json, sys
import PIL
from PIL import Image

def noise(w, h, seed):
    s, out = seed, bytearray(w * h * 3)
    for i in range(len(out)):
        s = (s * 1103515245 + 12345) & 0xFFFFFFFF
        out[i] = (s >> 16) & 255
    return Image.frombytes('RGB', (w, h), bytes(out))

# name, source w, h, seed, crop (left, top, width, height) or None, output side, full bytes (else sha256 only)
CASES = [
    ('enlarge 20x15', 20, 15, 1, None, 32, True),
    ('near 1:1 31x33', 31, 33, 2, None, 32, True),
    ('shrink 3x 100x80', 100, 80, 3, None, 32, True),
    ('shrink 6x 200x150', 200, 150, 4, None, 32, True),
    ('vertical only 32x50', 32, 50, 5, None, 32, True),
    ('horizontal only 50x32', 50, 32, 6, None, 32, True),
    ('one pixel', 1, 1, 7, None, 32, True),
    ('one row 7x1', 7, 1, 8, None, 32, True),
    ('crop then resize', 120, 90, 9, (13, 7, 61, 45), 32, True),
    ('photo-sized 500x375 to 224', 500, 375, 10, None, 224, False),
    ('small 150x100 to 224', 150, 100, 11, None, 224, False),
    ('crop 300x200 of 640x480 to 224', 640, 480, 12, (101, 57, 300, 200), 224, False),
]

cases = []
for name, w, h, seed, crop, r, full in CASES:
    img = noise(w, h, seed)
    if crop:
        left, top, cw, ch = crop
        img = img.crop((left, top, left + cw, top + ch))
    out = img.resize((r, r), Image.BICUBIC).tobytes()
    c = {'name': name, 'width': w, 'height': h, 'seed': seed, 'crop': crop, 'size': r, 'sha256': hashlib.sha256(out).hexdigest()}
    if full:
        c['rgb'] = base64.b64encode(out).decode()
    cases.append(c)
json.dump({'pillow': PIL.__version__, 'note': 'written by scripts/make-pil-resize-fixture.py', 'cases': cases},
          open(sys.argv[1] if len(sys.argv) > 1 else 'test/fixtures/pil-bicubic.json', 'w'), indent=1)
