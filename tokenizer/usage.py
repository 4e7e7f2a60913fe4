"""Token usage: does the decoder read its delta token, or only copy and blur the previous frame?

Each (prev, next) pair is decoded three ways: with its own token, with the token
of a pair from another clip (shuffled), and not at all (copy prev). Then

    usage = (loss_shuffled - loss_own) / (loss_copy - loss_own)

is how much of the improvement over copying is lost when the token is wrong.
Near 0 the decoder ignores its token (every forecast is copy-last in disguise);
near 1 or above, the token carries what changed.
"""

from __future__ import annotations

import math

import torch

from tokenizer.deltatok import DeltaTok, log_cosh

USAGE_WARNING_BELOW = 0.2


def usage_losses(
    deltatok: DeltaTok,
    prev: torch.Tensor,
    nxt: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    pairs_per_clip: int = 1,
) -> dict[str, torch.Tensor]:
    """Per-pair log-cosh losses (P,) of prev, next features (P, N, D): own token, shuffled token, copy prev.

    Pairs are grouped by clip, `pairs_per_clip` each; pair i is decoded with the token of
    pair i - `pairs_per_clip` (the previous clip's, wrapping around), never its own clip's.
    With a single clip there is nothing to shuffle against and the shuffled loss is the own loss.
    """
    tokens = deltatok.encode(prev, nxt, rope)
    shuffled = tokens.roll(pairs_per_clip, dims=0) if len(tokens) > pairs_per_clip else tokens
    per_pair = lambda pred: log_cosh(pred, nxt).mean(dim=(1, 2))  # noqa: E731
    return {
        "own": per_pair(deltatok.decode(tokens, prev, rope)),
        "shuffled": per_pair(deltatok.decode(shuffled, prev, rope)),
        "copy": per_pair(prev),
    }


def token_usage(own: float, shuffled: float, copy: float) -> float:
    """(shuffled - own) / (copy - own); NaN when the decoder is no better than copying (nothing to attribute)."""
    gain = copy - own
    return (shuffled - own) / gain if gain > 1e-12 else float("nan")


def usage_lines(own: float, shuffled: float, copy: float, where: str = "") -> list[str]:
    """What to print for mean losses: the usage line (`where` appended), then the warning when there is one."""
    usage = token_usage(own, shuffled, copy)
    report = (
        f"token usage {usage:.2f} (log-cosh: own token {own:.5f}, another clip's token {shuffled:.5f}, "
        f"copy-previous {copy:.5f}){where}"
    )
    warning = usage_warning(usage)
    return [report] + ([warning] if warning else [])


def usage_warning(usage: float) -> str | None:
    """The warning to print when the decoder barely reads its token (or is no better than copying), or None."""
    if math.isnan(usage):
        return (
            "warning: token usage is undefined: decoding is no better than copying the previous frame, so nothing "
            "can be attributed to the token. The tokenizer is untrained or diverged; train longer or lower train.lr."
        )
    if usage >= USAGE_WARNING_BELOW:
        return None
    return (
        f"warning: token usage is {usage:.2f} (below {USAGE_WARNING_BELOW}): the decoder gives nearly the same "
        "result with another clip's token, so the delta token does not carry what changed and every forecast "
        "built on it is copy-last in disguise. Try training longer, model.encoder_input=difference, "
        "a wider frame spacing, or check that consecutive frames actually differ."
    )
