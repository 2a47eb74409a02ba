"""Print the field reference of topologies/README.md from the dataclasses' own ``doc`` strings.

    python -m tpsim.report.schema_docs > /tmp/fields.md

tests/report/test_schema_docs.py checks that topologies/README.md holds exactly this output, so the
documentation cannot drift from the loader.
"""
from __future__ import annotations

from ..base.schema import field_docs
from ..cluster.topology import AttentionKernel, Device, Efficiency, Level, Protocol, Topology

SECTIONS = ((Topology, "top level", ""), (Device, "device", "device."),
            (Level, "levels[i]", "levels[i]."), (Efficiency, "levels[i].efficiency", "efficiency."),
            (Protocol, "device.collective_protocols.NAME", "NAME."),
            (AttentionKernel, "device.attention_kernels.NAME", "NAME."))


def reference() -> str:
    out = []
    for cls, title, prefix in SECTIONS:
        out += [f"### `{title}`", "", "| key | default | meaning |", "| --- | --- | --- |"]
        out += [f"| `{prefix}{k}` | {d} | {doc} |" for k, d, doc in field_docs(cls)]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(reference())
