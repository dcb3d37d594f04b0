"""Latency, throughput and quality benchmarks."""
