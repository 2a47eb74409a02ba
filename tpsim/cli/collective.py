"""`tpsim topologies` and `tpsim collective`: list the clusters, price one collective or a size sweep."""
from __future__ import annotations

from ..collectives import ALGORITHMS, OPS
from ..errors import ConfigError
from ..topology import PROTOCOLS
from .common import StoreOnce, dump_json, lower, positive_int

DEFAULT_BYTES = "64MiB"


def fill_topologies(p) -> None:
    p.set_defaults(func=cmd_topologies)


def cmd_topologies(args) -> None:
    from ..topology import load_topology, shipped_topologies
    topos = {name: load_topology(name) for name in shipped_topologies()}    # all, then print
    for name, topo in topos.items():
        print(f"{name:24s} {topo.max_ranks:5d} GPUs  {topo.description}")


def fill_collective(p) -> None:
    p.add_argument("--topology", default="dgx-h100", action=StoreOnce,
                   help="shipped name or path to a YAML file")
    p.add_argument("--op", default="all-reduce", choices=OPS, help="collective operation")
    p.add_argument("--ranks", type=positive_int, default=None, help="group size (default: one node)")
    p.add_argument("--bytes", default=None,
                   help="message size as nccl-tests counts it: 4096, 64MiB (2^20), 1GB (1e9) "
                        f"(default: {DEFAULT_BYTES}; not with --sweep)")
    p.add_argument("--algo", default="auto", type=lower, choices=("auto", *ALGORITHMS),
                   help="collective algorithm; auto: NCCL's minimum-time choice (never "
                        "hierarchical, which is not an NCCL algorithm)")
    p.add_argument("--protocol", default="auto", type=lower, choices=("auto", *PROTOCOLS),
                   help="NCCL protocol, any case (LL128 as NCCL_PROTO writes it); auto: the fastest")
    p.add_argument("--sweep", action="store_true",
                   help="sizes from --min-bytes to --max-bytes by powers of two")
    p.add_argument("--min-bytes", default="1KiB", help="with --sweep: smallest size")
    p.add_argument("--max-bytes", default="8GiB", help="with --sweep: largest size")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_collective)


def _cmd_collective(args) -> None:
    from ..collectives import collective_time
    from ..render import collective_table
    from ..topology import load_topology
    from ..units import parse_size, power_of_two_sizes
    if args.sweep and args.bytes is not None:
        raise ConfigError("--bytes", "", "no --bytes with --sweep (the sweep's sizes are "
                          "--min-bytes to --max-bytes)", args.bytes)
    topo = load_topology(args.topology)
    ranks = args.ranks if args.ranks is not None else topo.devices_per_node
    if args.sweep:
        sizes = power_of_two_sizes(parse_size(args.min_bytes, "--min-bytes"),
                                   parse_size(args.max_bytes, "--max-bytes"))
    else:
        sizes = [parse_size(args.bytes or DEFAULT_BYTES, "--bytes")]
    costs = [collective_time(args.op, s, ranks, topo, args.algo, args.protocol) for s in sizes]
    if args.json:
        rows = [c.as_dict() for c in costs]
        print(dump_json(rows if args.sweep else rows[0]))
    else:
        print(collective_table(costs, topo))
