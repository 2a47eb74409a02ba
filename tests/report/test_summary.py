"""The first answer's advice reads the layout: a knob already on, or one that cannot act (the
distributed optimizer with one DP replica), is never suggested."""
from __future__ import annotations

import tpsim
from tpsim.report.remedies import remedy_flags
from tpsim.report.render import notice_text
from tpsim.report.summary import advice, prediction_summary, search_command


def _advice(**layout) -> str:
    p = tpsim.predict(layout.pop("model"), layout.pop("topology", "dgx-h100"), **layout)
    return "\n".join(advice(p) + search_command(p.inputs)), p


def test_no_distributed_optimizer_advice_when_it_is_on_or_cannot_act():
    text, p = _advice(model="gpt3", tp=8, dp=2, global_batch=2, nodes=2,
                      topology="dgx-h100-ndr-cluster", distributed_optimizer=True)
    assert not p.memory.fits and "--distributed-optimizer" not in text
    assert "distributed optimizer" not in notice_text(p.warnings[0])
    text, p = _advice(model="gpt3", tp=8)                       # dp = 1: nothing to shard over
    assert not p.memory.fits and "--distributed-optimizer" not in text
    text, p = _advice(model="gpt3", tp=8, dp=2, global_batch=2, nodes=2,
                      topology="dgx-h100-ndr-cluster")
    assert "--distributed-optimizer" in text and "distributed optimizer" in notice_text(
        p.warnings[0])


def test_pipeline_advice_names_enough_stages():
    """--pp k from the advice splits the weights, gradients and optimizer state enough that
    they and the activations fit (1F1B keeps the activations in flight about the same), and
    is the fewest stages that do and run (the layers split over them)."""
    text, p = _advice(model="gpt3", tp=8, topology="dgx-a100-hdr-cluster")
    k = int(text.split("--pp ", 1)[1].split()[0])
    m = p.memory
    usable = m.capacity_bytes - m.reserved_bytes
    state = m.weights_bytes + m.gradients_bytes + m.optimizer_bytes
    assert state / k + m.activations_bytes <= usable and p.model.layers % k == 0
    assert all(state / j + m.activations_bytes > usable for j in range(1, k)
               if p.model.layers % j == 0)


def test_no_advice_that_cannot_run():
    """One 8-GPU node whose network cannot be sized: no more stages (tp 8 fills it), no more
    TP (a node holds 8); the notice and the advice name the same remedies."""
    text, p = _advice(model="gpt3", tp=8)
    assert not p.memory.fits and "--pp" not in text and "--tp" not in text
    assert "pipeline" not in notice_text(p.warnings[0]) and "more TP" not in notice_text(
        p.warnings[0])


def test_every_memory_remedy_runs():
    """Each change the advice offers, applied, is a layout predict takes (and the notice lists
    each by its flags, as the advice does)."""
    layout = dict(model="gpt3", topology="dgx-a100-hdr-cluster", tp=4, pp=8, dp=4,
                  global_batch=64)
    text, p = _advice(**dict(layout))
    remedies = p.warnings[0].values["remedies"]
    assert [next(iter(c)) for c in remedies] == ["distributed_optimizer", "pp", "recompute",
                                                 "sequence_parallel", "tp"]
    for change in remedies:
        assert tpsim.predict(**{**layout, **change}).step.time_s > 0
        assert remedy_flags(change) in notice_text(p.warnings[0])
        assert remedy_flags(change) in text


def test_an_moe_models_tp_remedy_runs():
    """Mixtral without SP at TP 1: the more-TP remedy turns SP on, which Megatron-core's MoE
    layers need beside TP, so the layout it offers runs."""
    layout = dict(model="mixtral-8x7b", topology="dgx-h100-ndr-cluster", nodes=2, tp=1, ep=8,
                  dp=16, global_batch=16, seq_len=4096)
    text, p = _advice(**dict(layout))
    tp = [c for c in p.warnings[0].values["remedies"] if "tp" in c]
    assert tp and all(c["sequence_parallel"] for c in tp)
    for change in tp:
        assert tpsim.predict(**{**layout, **change}).step.time_s > 0
        assert remedy_flags(change) in text and "--sequence-parallel" in remedy_flags(change)


def test_tp_overlap_advice_only_when_off():
    base = dict(model="llama3-8b", tp=2, dp=4, global_batch=128, sequence_parallel=True,
                distributed_optimizer=True)
    text, p = _advice(**base)
    assert p.memory.fits and "--tp-comm-overlap" in text
    text, _ = _advice(**base, tp_comm_overlap=True)
    assert "--tp-comm-overlap" not in text
    assert "FITS" in prediction_summary(p)


def test_search_advice_and_no_tp_overlap_for_a_mixture_of_experts():
    """The search prices MoE models (their EP enumerated); TP overlap is refused with
    experts, so it is never advised."""
    text, p = _advice(model="mixtral-8x7b", tp=8, sequence_parallel=True)
    assert p.inputs.experts == 8 and "tpsim search --model mixtral-8x7b" in text
    assert "--tp-comm-overlap" not in text


def test_virtual_stages_advice_only_where_the_layers_split():
    """A large bubble: --virtual-stages 2 offered at pp 16 (6 layers a stage, 3 a chunk), not
    at pp 32 (3 layers a stage do not split over 2 chunks)."""
    common = dict(model="gpt3", topology="dgx-a100-hdr-cluster", tp=8, recompute="full")
    text, _ = _advice(**common, pp=16, global_batch=16)
    assert "the bubble" in text and "--virtual-stages 2" in text
    tpsim.predict(**common, pp=16, global_batch=16, virtual_stages=2)        # it runs
    text, _ = _advice(**common, pp=32, global_batch=32)
    assert "the bubble" in text and "--virtual-stages" not in text


def test_the_layer_line_names_its_groups_and_the_step_its_ep_part():
    """The one-layer line names the groups its collectives run on (a dense TP layout: TP; EP's
    all-to-alls and the experts' own TP group: TP/EP/ETP, the largest's group in brackets); the step's exposed TP gives the EP
    part (ep_comm_exposed_s) in brackets, a dense model's none."""
    dense = prediction_summary(tpsim.predict("llama3-8b", tp=2, dp=4, global_batch=128))
    assert "TP collectives, the largest" in dense and "(EP " not in dense
    p = tpsim.predict("mixtral-8x7b", "dgx-h100-ndr-cluster", tp=2, ep=8, dp=32, nodes=8,
                      global_batch=256, seq_len=4096, sequence_parallel=True)
    text = prediction_summary(p)
    ms = p.step.ep_comm_exposed_s * 1e3
    assert p.step.ep_comm_exposed_s > 0 and f"(EP {ms:.2f} ms)" in text
    assert "TP/EP/ETP collectives, the largest all-to-all (EP)" in text    # ETP: expert TP
    assert "TP/EP/ETP comm exposed" in text


def test_the_search_line_of_the_searched_best_ranks_it_first():
    """predict does not search: its search line claims no faster layout, and it carries the
    job (GPUs, global batch, sequence length, dtype), so that for the layout tpsim search
    chose, running the line puts that layout first at the same step time."""
    import shlex
    from dataclasses import replace

    from tpsim.search.driver import search
    best = search("gpt3-125m", "dgx-a100", 8, 16, seq_len=1024, dtype="fp16",
                  top=1).candidates[0]
    layout = replace(best.layout, seq_len=1024, dtype="fp16")
    p = tpsim.predict("gpt3-125m", "dgx-a100", layout=layout)
    assert "fastest layout" not in advice(p)[-1] and p.step.time_s == best.step_s
    lines = search_command(p.inputs, asked=layout.predict_kwargs())   # as the CLI asks it
    argv = shlex.split(" ".join(x.removesuffix(" \\") for x in lines))
    assert argv[:2] == ["tpsim", "search"]
    flags = dict(zip(argv[2::2], argv[3::2]))
    assert set(flags) == {"--model", "--topology", "--gpus", "--global-batch", "--seq",
                          "--dtype"}
    again = search(flags["--model"], flags["--topology"], int(flags["--gpus"]),
                   int(flags["--global-batch"]), seq_len=int(flags["--seq"]),
                   dtype=flags["--dtype"], top=1).candidates[0]
    assert again.layout == best.layout and again.step_s == p.step.time_s


def test_the_search_line_pastes_as_the_same_job():
    """The advice's `tpsim search` names the model and topology as given (a file's path), holds
    the run's fixed settings (a switch turned off as --no-...), not its enumerated ones, and its
    lines, joined at their shell continuations, parse as one search command."""
    from tpsim.cli import build_parser
    from tpsim.report.summary import WIDTH
    p = tpsim.predict("gpt2", "dgx-h100", tp=2, dp=2, global_batch=4, overlap_grad_reduce=False,
                      dropout=0.0)
    text = prediction_summary(p, "models/my model/config.json", "my-cluster.yaml",
                              {"tp": 2, "dp": 2, "overlap_grad_reduce": False, "dropout": 0.0})
    lines = text.split("fastest first:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert all(len(x) <= WIDTH for x in lines)
    assert all(x.endswith(" \\") for x in lines[:-1]) and not lines[-1].endswith("\\")
    cmd = " ".join(x.removesuffix(" \\").strip() for x in lines)
    assert "--no-overlap-grad-reduce" in cmd and "--dropout 0.0" in cmd and "--tp" not in cmd
    args = build_parser().parse_args(cmd.replace("my model", "my_model").split()[1:])
    assert (args.model, args.topology, args.gpus, args.global_batch) == (
        "models/my_model/config.json", "my-cluster.yaml", 4, 4)
    assert prediction_summary(p).count("--no-overlap-grad-reduce") == 1   # from the inputs


def test_the_advice_offers_nothing_the_framework_lacks():
    """Under --framework the advice leaves out what the stack cannot run (DeepSpeed's pipeline
    does not interleave; Megatron-LM of 2021 has no distributed optimizer, which would be the
    first remedy without it), and the search line names the framework, not its preset's knobs."""
    from tpsim.report.remedies import setting_flags
    from tpsim.spec.frameworks import FRAMEWORKS, with_framework
    from tpsim.spec.layout import Layout
    from tpsim.spec.settings import defaults
    for name, job, lacked, kept in (
            ("megatron-deepspeed", dict(model="llama3-8b", tp=2, pp=2, dp=2, global_batch=16),
             "--virtual-stages", "more micro-batches"),
            ("megatron-lm-2021", dict(model="gpt3", tp=8, dp=2, global_batch=2, nodes=2,
                                      topology="dgx-h100-ndr-cluster"),
             "--distributed-optimizer", "--pp 8")):
        asked = with_framework(name, {k: v for k, v in job.items() if k not in
                                      ("model", "topology")}, defaults(Layout))
        p = tpsim.predict(job["model"], job.get("topology", "dgx-h100"), **asked)
        plain, under = prediction_summary(p, asked=asked), prediction_summary(
            p, asked=asked, framework=name)
        assert lacked in plain and lacked not in under and kept in under
        search = under.split("fastest first:\n", 1)[1]
        assert f"--framework {name}" in search.replace(" \\\n    ", " ")
        assert not any(f"{flag} " in search + " " for flag in setting_flags(FRAMEWORKS[name]))
