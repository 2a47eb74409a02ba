"""`tpsim topologies` and `tpsim collective`: list the clusters, price one collective or a size sweep."""
from __future__ import annotations

import json

from ..collectives import ALGORITHMS, OPS
from ..topology import PROTOCOLS


def cmd_topologies(args) -> None:
    from ..topology import load_topology, shipped_topologies
    for name in shipped_topologies():
        topo = load_topology(name)
        print(f"{name:24s} {topo.max_ranks:5d} GPUs  {topo.description}")


def add_collective(sub) -> None:
    p = sub.add_parser("collective", help="price one collective (or a sweep of sizes) on a topology")
    p.add_argument("--topology", default="dgx-h100", help="shipped name or path to a YAML file")
    p.add_argument("--op", default="all-reduce",
                   choices=OPS)
    p.add_argument("--ranks", type=int, default=None, help="group size (default: one node)")
    p.add_argument("--bytes", default="64MiB",
                   help="message size as nccl-tests counts it: 4096, 64MiB (2^20), 1GB (1e9)")
    p.add_argument("--algo", default="auto",
                   help=f"{', '.join(ALGORITHMS)} or auto (NCCL's minimum-time choice; never "
                        "hierarchical, which is not an NCCL algorithm)")
    p.add_argument("--protocol", default="auto", help=f"{', '.join(PROTOCOLS)} or auto")
    p.add_argument("--sweep", action="store_true", help="sizes 1 KiB to 8 GiB by powers of two")
    p.add_argument("--min-bytes", default="1KiB", help="with --sweep: smallest size")
    p.add_argument("--max-bytes", default="8GiB", help="with --sweep: largest size")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_collective)


def _cmd_collective(args) -> None:
    from ..collectives import collective_time
    from ..render import collective_table
    from ..topology import load_topology
    from ..units import parse_size, power_of_two_sizes
    topo = load_topology(args.topology)
    ranks = args.ranks if args.ranks is not None else topo.devices_per_node
    if args.sweep:
        sizes = power_of_two_sizes(parse_size(args.min_bytes, "--min-bytes"),
                                   parse_size(args.max_bytes, "--max-bytes"))
    else:
        sizes = [parse_size(args.bytes, "--bytes")]
    costs = [collective_time(args.op, s, ranks, topo, args.algo, args.protocol) for s in sizes]
    if args.json:
        rows = [c.as_dict() for c in costs]
        print(json.dumps(rows if args.sweep else rows[0], indent=2))
    else:
        print(collective_table(costs, topo))
