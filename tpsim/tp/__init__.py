"""Real tensor-parallel layers on torch.distributed (imports torch; nothing else in tpsim does).

``mappings`` holds the communication autograd operators, ``layers`` the layers built on them,
``check`` their comparison with a single-device reference, ``context_parallel`` the ring
attention of context parallelism.
"""
from .context_parallel import ring_attention
from .layers import (ColumnParallelLinear, NaiveParallelMLP, ParallelAttention, ParallelMLP,
                     RowParallelLinear, ShardingError, full_weight)
from .mappings import CollectiveCall, record_collectives

__all__ = ["ColumnParallelLinear", "RowParallelLinear", "ParallelMLP", "ParallelAttention",
           "NaiveParallelMLP", "ShardingError", "full_weight", "CollectiveCall",
           "record_collectives", "ring_attention"]
