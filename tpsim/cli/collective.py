"""`tpsim topologies` and `tpsim collective`: list the clusters, price one collective or a size sweep."""
from __future__ import annotations

from ..cost.collectives import ALGORITHMS, OPS
from ..cost.collective_ops import op_name
from ..base.errors import ConfigError
from ..cluster.topology import PROTOCOLS
from .common import TOPOLOGY_HELP, StoreOnce, dump_json, lower, topology_for
from .layout_args import add_layout_arguments
from .lists import braces, choice_list, combinations, int_list, name_list, varied

DEFAULT_BYTES = "64MiB"


def fill_topologies(p) -> None:
    p.set_defaults(func=cmd_topologies)


def cmd_topologies(args) -> None:
    from ..cluster.topology import load_topology, shipped_topologies
    topos = {name: load_topology(name) for name in shipped_topologies()}    # all, then print
    for name, topo in topos.items():
        print(f"{name:24s} {topo.max_ranks:5d} GPUs  {topo.description}")


def fill_collective(p) -> None:
    p.add_argument("--topology", default=None, action=StoreOnce, type=name_list,
                   help=TOPOLOGY_HELP.replace(" (", "; every flag that takes a comma list "
                                              "(--topology dgx-a100,dgx-h100 --ranks 2,4,8) "
                                              "compares each combination in one table (", 1))
    p.add_argument("--op", default=("all-reduce",), type=choice_list(OPS, op_name),
                   metavar=braces(OPS), help="collective operation; nccl-tests' and NCCL's "
                   "names too (all_reduce, AllReduce) (default: all-reduce)")
    p.add_argument("--ranks", type=int_list, default=None,
                   help="group size (default: one node)")
    p.add_argument("--bytes", default=None, type=name_list,
                   help="message size as nccl-tests counts it: 4096, 64MiB (2^20), 1GB (1e9) "
                        f"(default: {DEFAULT_BYTES}; not with --sweep)")
    p.add_argument("--algo", default=("auto",), type=choice_list(("auto", *ALGORITHMS), lower),
                   metavar=braces(("auto", *ALGORITHMS)),
                   help="collective algorithm; auto: NCCL's minimum-time choice (never "
                        "hierarchical, which is not an NCCL algorithm) (default: auto)")
    p.add_argument("--protocol", default=("auto",), type=choice_list(("auto", *PROTOCOLS), lower),
                   metavar=braces(("auto", *PROTOCOLS)),
                   help="NCCL protocol, any case (LL128 as NCCL_PROTO writes it); auto: the "
                        "fastest; for all-to-all only auto (NCCL's rule: LL where a peer's bytes "
                        "fit the --nccl release's LL threshold inside a node, else Simple) or "
                        "simple (default: auto)")
    add_layout_arguments(p, ("nccl",), lists=True)
    p.add_argument("--sweep", action="store_true",
                   help="sizes from --min-bytes to --max-bytes by powers of two")
    p.add_argument("--min-bytes", default=None, help="with --sweep: smallest size (default: 1KiB)")
    p.add_argument("--max-bytes", default=None, help="with --sweep: largest size (default: 8GiB)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_collective)


def _cmd_collective(args) -> None:
    from ..cost.collectives import collective_time
    from ..report.render import collective_comparison, collective_table
    from ..cluster.nccl import topology_of
    from ..base.units import parse_size, power_of_two_sizes
    if args.sweep and args.bytes is not None:
        raise ConfigError("--bytes", "", "no --bytes with --sweep (the sweep's sizes are "
                          "--min-bytes to --max-bytes)", ",".join(args.bytes))
    for flag, given in (("--min-bytes", args.min_bytes), ("--max-bytes", args.max_bytes)):
        if given is not None and not args.sweep:
            raise ConfigError(flag, "", "--sweep with it (without --sweep the sizes are "
                              "--bytes)", given)
    if args.sweep:
        low = "1KiB" if args.min_bytes is None else args.min_bytes     # '' is refused, not 1KiB
        high = "8GiB" if args.max_bytes is None else args.max_bytes
        sizes = tuple(power_of_two_sizes(parse_size(low, "--min-bytes"),
                                         parse_size(high, "--max-bytes")))
    else:
        sizes = tuple(parse_size(b, "--bytes") for b in args.bytes or (DEFAULT_BYTES,))
    if args.topology is None:          # the default for the largest group asked for
        args.topology = (topology_for(None, max(args.ranks or (None,), key=lambda r: r or 0)),)
    topos = {(name, release): topology_of(name, release)
             for name in args.topology for release in args.nccl}
    args.size = sizes
    combos = combinations(args, ("topology", "nccl", "op", "ranks", "algo", "protocol", "size"))
    rows = []
    for c in combos:
        topo = topos[c["topology"], c["nccl"]]
        ranks = c["ranks"] if c["ranks"] is not None else topo.devices_per_node
        if ranks > topo.max_ranks:
            raise ConfigError("--ranks", "", f"at most the {topo.max_ranks} GPUs of {topo.name} "
                              "(more: a topology YAML whose outer level's size is larger, "
                              "topologies/README.md)", ranks)
        rows.append((topo, collective_time(c["op"], c["size"], ranks, topo, c["algo"],
                                           c["protocol"])))
    single = len(combos) == len(sizes) and all(len(getattr(args, k) or (0,)) == 1 for k in
                                               ("topology", "nccl", "op", "ranks", "algo",
                                                "protocol"))
    if args.json:
        out = [c.as_dict() if single else {"topology": t.name, "nccl": combo["nccl"], **c.as_dict()}
               for (t, c), combo in zip(rows, combos)]
        print(dump_json(out if len(out) > 1 or args.sweep else out[0]))
    elif single:
        print(collective_table([c for _, c in rows], rows[0][0]))
    else:
        print(collective_comparison(rows, [k for k in varied(combos) if k != "size"],
                                    [c["nccl"] for c in combos]))
