"""torch 2.8's interleaved 1F1B table and its lock-step batches (tpsim.training.torch_pipeline)."""
import pytest

from tpsim.training.pipeline import add_pipeline, pipeline_schedule
from tpsim.training.step_graph import StepGraph
from tpsim.training.torch_pipeline import TORCH, rank_steps, runtime_schedule, step_batches

CASES = [(2, 2, 2), (2, 4, 2), (4, 4, 2), (4, 8, 8), (3, 6, 3), (8, 16, 2)]


@pytest.mark.parametrize("p, m, v", CASES)
def test_every_chunk_runs_once_each_way(p, m, v):
    for r in range(p):
        acts = [a for a in rank_steps(p, m, v, r) if a is not None]
        assert sorted(acts) == sorted((k, mb, c) for k in "FB" for mb in range(m)
                                      for c in range(v))


@pytest.mark.parametrize("p, m, v", CASES)
def test_each_message_meets_its_receiver_in_the_same_step(p, m, v):
    rows = step_batches(p, m, v)
    for r in range(p):
        for t, (_, sends, _) in enumerate(rows[r]):
            for msg in sends:
                assert msg in rows[msg.dst % p][t][2]
    received = sum(len(recvs) for row in rows for _, _, recvs in row)
    assert received == sum(len(sends) for row in rows for _, sends, _ in row)


@pytest.mark.parametrize("p, m, v", CASES)
def test_equal_chunks_take_one_chunk_more_than_megatron(p, m, v):
    """Equal chunks, free transfers: Megatron-core's interleaved schedule ends after
    2 m v + 2 (p - 1) chunks; torch's after one more, its last stage's idle step after the
    warm-up holding its first steady forward behind the previous stage's next forward."""
    ends = {}
    for runtime in ("megatron", TORCH):
        g = StepGraph()
        add_pipeline(g, runtime_schedule(p, m, v, runtime), lambda r, c, k: 1.0,
                     lambda a, b: 0.0)
        ends[runtime] = max(g.run().timeline.end)
    assert ends["megatron"] == 2 * m * v + 2 * (p - 1)
    assert ends[TORCH] == ends["megatron"] + 1


def test_without_interleaving_it_is_megatrons_1f1b():
    assert runtime_schedule(4, 8, 1, TORCH) == pipeline_schedule(4, 8, 1)
