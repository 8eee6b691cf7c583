"""Random-weight tiny checkpoints of the Glm4v architecture (weights, tokenizer, configs) for the
`convert` demo, the tests and the benchmarks. Private: not part of the package's public API."""
