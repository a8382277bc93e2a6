"""Developer tools: code generation, the local stack, benchmarks."""
