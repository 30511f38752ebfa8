#!/usr/bin/env python3
"""Greedy-dispatch simulation of the causal attention kernels' block order (native/src/cuda/block_order.h).

Each block of a causal forward (one 128-row query tile of one head) costs one unit per key tile it visits plus half a
unit of fixed cost; blocks start in order on the first free SM (one block per SM: the Hopper kernels' shared memory).
Prints the makespan in tile-units for launch order (each head's tiles longest first, heads one after another), for
longest-first over all heads, and for longest-first inside sections of S heads (what the dispatch does, S from half
the L2 over a head's keys and values). The last column is the persistent forward (OWLET_ATTN_FWD=wgmma-wsp): one
block per SM taking the next item of the sectioned order when it finishes one (an atomic counter), its fixed cost
paid once per block and an assumed tenth of a unit per further item (the next Q and K land while the last item's
output is written); and for comparison the same blocks taking items in static round robin. Then the backward's
blocks (key tiles) the same way.
Usage: python3 bench/block_order_sim.py [SMS]
"""
import heapq
import sys

SMS = int(sys.argv[1]) if len(sys.argv) > 1 else 132
FIXED = 0.5
FIXED_NEXT = 0.1  # the persistent kernel's cost per item after its first (assumed)


def makespan(works, fixed=FIXED):
    free = [0.0] * SMS
    for w in works:
        t = heapq.heappop(free)
        heapq.heappush(free, t + w + fixed)
    return max(free)


def persistent(works, dynamic=True, fixed=FIXED, fixed_next=FIXED_NEXT):
    """One block per SM, each paying FIXED once: dynamic, the next item to the first block to finish (what the
    kernel's atomic item counter does); else static round robin (block i runs items i, i + SMS, ...)."""
    if not dynamic:
        blocks = [0.0] * min(SMS, len(works))
        for i, w in enumerate(works):
            blocks[i % SMS] += w + (fixed if i < SMS else fixed_next)
        return max(blocks)
    free = [fixed - fixed_next] * min(SMS, len(works))
    for w in works:
        t = heapq.heappop(free)
        heapq.heappush(free, t + w + fixed_next)
    return max(free)


def sections(nq, heads, n):
    """n sections of heads, widths differing by at most one (the first heads % n one wider)."""
    order = []
    for i in range(n):
        width = heads // n + (1 if i < heads % n else 0)
        order += [nq - rank for rank in range(nq) for _ in range(width)]
    return order


print(f"{SMS} SMs, one block each; tile-units (lower bound = total work / SMs)")
for b, h, t in [(4, 32, 2048), (2, 32, 2048), (1, 32, 2048), (16, 32, 512), (8, 32, 512), (8, 16, 4096)]:
    nq, heads = t // 128, b * h
    launch = [nq - rank for _ in range(heads) for rank in range(nq)]
    kv_bytes = 4 * t * 128  # a head's K and V, bf16
    most = max(1, (50 << 20) // 2 // kv_bytes)  # heads whose keys and values fill half an H100/H200's L2 (50 MiB)
    n = -(-heads // most)  # sections of at most that many heads
    bound = sum(w + FIXED for w in launch) / SMS
    print(f"B{b} H{h} T{t}: bound {bound:.1f}  launch order {makespan(launch):.1f}  "
          f"longest first {makespan(sections(nq, heads, 1)):.1f}  {n} sections of ≤ {most} heads {makespan(sections(nq, heads, n)):.1f}  "
          f"persistent {persistent(sections(nq, heads, n)):.1f} (static round robin {persistent(sections(nq, heads, n), False):.1f})")

# The backward (one block per 128-key tile: key tile j is seen by the query tiles from its own on, the same longest-
# first ranks as the forward's query tiles; 2.5 times the forward's products per tile-unit of work; a fixed cost of
# K, V and the first Q/dO tile, 96 KiB against the forward's 64: 0.75 units; persistent (OWLET_ATTN_BWD=wgmma-p) 0.15
# per further item, the next item's loads issued before the last one's dK and dV are written).
print("backward, the same units")
for b, h, t in [(4, 32, 2048), (2, 32, 2048), (16, 32, 512), (8, 32, 512)]:
    nq, heads = t // 128, b * h
    kv_bytes = 4 * t * 128
    most = max(1, (50 << 20) // 2 // (kv_bytes // 2 * 3))  # a head's Q, dO and the dQ accumulator's share
    n = -(-heads // most)
    works = [2.5 * w for w in sections(nq, heads, n)]
    print(f"B{b} H{h} T{t}: {n} sections {makespan(works, 0.75):.1f}  persistent {persistent(works, True, 0.75, 0.15):.1f}")
