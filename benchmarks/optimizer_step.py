"""One BSO / T-BSO step on VGG-11's binary tensors vs a per-tensor loop, SGD momentum and the bandwidth floor
(= ``bsnn bench optimizer``)."""
import sys

from bsnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "optimizer", *sys.argv[1:]]))
