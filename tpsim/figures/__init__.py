"""Figures: the numbers behind each plot (data, pipeline, search) and the drawing
(plot, plot_search; matplotlib, imported only here)."""
