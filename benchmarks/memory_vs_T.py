"""Training memory versus T: online T-BSO / BSO, SpikingJelly OTTT (FP) and BPTT with latent weights.

    python benchmarks/memory_vs_T.py                       # T = 1 2 4 8 16, GPU if present
    python benchmarks/memory_vs_T.py --csv mem.csv --batch-size 32

Same as ``bsnn bench memory``; see ``bsnn.bench.memory`` for what each column means.
"""
import sys

from bsnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "memory", *sys.argv[1:]]))
