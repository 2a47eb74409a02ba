"""A training step: pipeline schedules (pipeline, stage_program, step_graph, step_programs), data
parallelism and the optimizer (data_parallel), the step timed and accounted (step, step_timing,
step_idle, step_accounting), its closed-form bound (step_bound) and the glue behind
tpsim.predict (predict)."""
