"""Benchmarks: model statistics, sparse vs dense training, sliding window vs top-k inference."""
