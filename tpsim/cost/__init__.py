"""Pure cost functions, numbers in and seconds out: GEMMs, attention and memory-bound kernels
(compute), collectives by algorithm and protocol (collectives, collective_cost, nvls_pipeline)."""
