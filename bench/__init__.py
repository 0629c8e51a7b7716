"""Benchmarks run by hand (`make bench`, `make bench-import`): each starts its own stack on
loopback and prints ratios measured side by side. The top layer: it may import anything."""
