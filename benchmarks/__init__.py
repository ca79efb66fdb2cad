"""Benchmarks of nb2-agents: PPO throughput, encoder scaling, token sampling (``python -m benchmarks``)."""
