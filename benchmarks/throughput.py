"""Training samples/s for online T-BSO / BSO, SpikingJelly OTTT and BPTT, side by side (= ``bsnn bench throughput``)."""
import sys

from bsnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "throughput", *sys.argv[1:]]))
