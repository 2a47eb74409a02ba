"""A training step: pipeline schedules (pipeline, stage_program, step_graph), data
parallelism and the optimizer (data_parallel), the step simulated and accounted (step,
step_accounting), its closed-form bound (step_bound) and the glue behind tpsim.predict (predict)."""
