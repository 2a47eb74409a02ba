"""Fitting tpsim's parameters to measurements: least squares through tpsim's own pricing
(fitting), measured points read from CSV or a validate report (measured)."""
