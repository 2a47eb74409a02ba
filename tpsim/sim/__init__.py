"""A template priced and scheduled: op -> seconds (price), in-order compute and communication
streams (schedule), one layer simulated (simulate), the result types (result, memory)."""
