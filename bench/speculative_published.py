"""tpsim infer's speculative decoding beside SGLang's published DeepSeek-V3 MTP speed-ups.

    python bench/speculative_published.py

Data (used in no fit): SGLang's DeepSeek guide (docs/references/deepseek.md, "Multi-token
Prediction"): with MTP "the decoding speed can be improved by 1.8x for batch size 1 and 1.5x
for batch size 32 respectively on H200 TP8 setting", its command ``--speculative-num-steps 1
--speculative-eagle-topk 1 --speculative-num-draft-tokens 2`` (one drafted token, k = 1) and
the model's block-wise FP8 weights. The input, the acceptance: SGLang pull request #3582
("Support NextN (MTP) speculative decoding for DeepSeek-V3/R1") measured "~1.9 avg accept
length for draft 2 tokens" (``--speculative-num-steps 2 --speculative-eagle-topk 1
--speculative-num-draft-tokens 2``): E = 1 + a = 1.9 at k = 1, so a = 0.9. The guide names no
prompt or output length: 1024 and 1024 here (256 and 256 move tpsim's speed-up by under 0.5%).
tpsim's ``speculative.speedup`` is the time per output token without the draft over the time
with it, on the shipped dgx-h200 topology; the DeepSeek-V3 report's 85% acceptance (the low
end of its 85-90%) is printed beside it.
"""
from __future__ import annotations

from tpsim.serving.infer import infer

SOURCE = ("SGLang docs/references/deepseek.md (MTP, H200 TP8) and PR #3582 (accept length "
          "~1.9 at k = 1)")
MEASURED = {1: 1.8, 32: 1.5}        # batch -> published decoding speed-up
ACCEPTANCE = 0.9                    # PR #3582: avg accept length 1.9 at one drafted token


def rows(acceptance: float = ACCEPTANCE) -> list[dict]:
    """One row per published speed-up: tpsim's and its signed error, percent."""
    out = []
    for batch, measured in MEASURED.items():
        p = infer("deepseek-v3", "dgx-h200", tp=8, batch=batch, prompt=1024, gen=1024,
                  dtype="fp8", speculative="mtp", num_speculative_tokens=1,
                  acceptance_rate=acceptance)
        s = p.speculative
        out.append({"batch": batch, "measured": measured, "tpsim": s.speedup,
                    "draft_share": s.draft_share,
                    "error_pct": 100 * (s.speedup - measured) / measured})
    return out


def main() -> None:
    print(SOURCE)
    for a in (ACCEPTANCE, 0.85):
        print(f"\nacceptance {a}\n  batch  published  tpsim  draft share   error")
        for r in rows(a):
            print(f"  {r['batch']:5d}  {r['measured']:8.2f}x {r['tpsim']:5.2f}x "
                  f"{r['draft_share']:11.1%}  {r['error_pct']:+6.1f}%")


if __name__ == "__main__":
    main()
