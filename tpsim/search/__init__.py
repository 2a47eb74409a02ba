"""tpsim search: every layout enumerated and bounded (driver), priced as arrays per pipeline
(price, step), the best re-priced by the step simulation, over worker processes (jobs)."""
