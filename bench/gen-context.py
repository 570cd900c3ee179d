#!/usr/bin/env python3
"""Makes the big build context of the layer benchmarks: 20,000 files, about 207 MB, in 200
directories, deterministic (fixed seed). Mixed like a real tree: text-like sources (about 55% of
the bytes, compress ~3.5x), binaries with some structure (25%, ~1.6x) and incompressible data
(20%: media, archives).   usage: bench/gen-context.py DIR [FILES] [MB]"""
import os
import random
import sys

dest = sys.argv[1]
files = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
total = (int(sys.argv[3]) if len(sys.argv) > 3 else 207) * 1000 * 1000
rng = random.Random(16)
words = [
    "fn", "let", "mut", "return", "struct", "impl", "self", "match", "if", "else", "for", "in",
    "while", "pub", "use", "mod", "const", "static", "true", "false", "None", "Some", "Ok", "Err",
    "layer", "digest", "snapshot", "store", "index", "config", "manifest", "blob", "tar",
    "options", "error", "result", "value", "path", "name", "size", "offset", "buffer", "read",
    "write", "open", "close", "into", "from", "iter", "map", "collect", "clone", "as_ref",
]
idents = ["%s_%d" % (rng.choice(words), rng.randrange(1000)) for _ in range(3000)]
punct = [" = ", "(", ")", ", ", ";\n", " {\n", "}\n", ".", "::", " -> ", "    ", "&", "\n"]


def text_pool(n):
    out = []
    size = 0
    while size < n:
        r = rng.random()
        tok = rng.choice(words) if r < 0.4 else rng.choice(idents) if r < 0.75 else rng.choice(punct)
        out.append(tok)
        size += len(tok) + 1
        out.append(" ")
    return "".join(out).encode()[:n]


pool = text_pool(16 << 20)
# sizes: log-normal, scaled to the total
raw = [rng.lognormvariate(8.3, 1.2) for _ in range(files)]
scale = total / sum(raw)
sizes = [max(1, int(s * scale)) for s in raw]
sizes[-1] += total - sum(sizes)
for i, size in enumerate(sizes):
    d = os.path.join(dest, "pkg%03d" % (i % 200), "mod%02d" % ((i // 200) % 10))
    os.makedirs(d, exist_ok=True)
    kind = rng.random()
    if kind < 0.55:
        ext = ".rs"
        off = rng.randrange(len(pool) - size) if size < len(pool) else 0
        data = bytearray(pool[off:off + size])
        for _ in range(size // 48):
            data[rng.randrange(len(data))] = 48 + rng.randrange(10)
    elif kind < 0.80:
        ext = ".bin"
        chunks = []
        n = 0
        while n < size:
            if rng.random() < 0.5:
                c = rng.randbytes(rng.randrange(8, 64))
            else:
                c = bytes(rng.randrange(4)) * rng.randrange(8, 96)
            chunks.append(c)
            n += len(c)
        data = b"".join(chunks)[:size]
    else:
        ext = ".dat"
        data = rng.randbytes(size)
    with open(os.path.join(d, "f%05d%s" % (i, ext)), "wb") as f:
        f.write(data)
