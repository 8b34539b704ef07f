"""The science: arrays in, arrays out (no config, files, console or runner).

See docs/architecture.md for what this package may import."""
