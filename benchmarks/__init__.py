"""Benchmarks: `python -m benchmarks` runs them all and writes `benchmarks/results/latest.json`.

Each benchmark runs on the main thread of its own process invocation and measures its peers in the
same run, interleaved, so that every figure it prints is a median and a ratio, not a lone time.
"""
