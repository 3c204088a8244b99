"""Benchmarks behind ``bsnn bench``: memory vs T, throughput, optimizer-step cost."""
