"""The machine: the device and the levels of the network (topology) and where a process
group's ranks sit on them (placement)."""
