"""Token usage (tokenizer.usage) and the energy score (worldmodel.evaluation) on cases with known answers."""

from __future__ import annotations

import math

import torch

from tokenizer.deltatok import log_cosh
from tokenizer.usage import USAGE_WARNING_BELOW, token_usage, usage_losses, usage_warning
from worldmodel.evaluation import energy_score, energy_terms, rms_distance


class Oracle:
    """A 'tokenizer' whose token is the next frame itself: decoding its own token is exact."""

    def encode(self, prev, nxt, rope):
        return nxt

    def decode(self, token, prev, rope):
        return token


class Blind(Oracle):
    """Reads nothing from its token: a fixed correction of the previous frame (the drift `pairs` adds)."""

    def decode(self, token, prev, rope):
        return prev + 0.3


def pairs(clips: int, per_clip: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    prev = torch.randn(clips * per_clip, 4, 3)
    return prev, prev + 0.3 + 0.2 * torch.randn_like(prev)


def test_a_decoder_that_reads_its_token_scores_high_and_one_that_does_not_scores_zero():
    prev, nxt = pairs(3, 2)
    oracle = usage_losses(Oracle(), prev, nxt, rope=None, pairs_per_clip=2)
    assert torch.all(oracle["own"] == 0)
    assert torch.allclose(oracle["copy"], log_cosh(prev, nxt).mean(dim=(1, 2)))
    # Pair i is decoded with the token of pair i - 2: the same position in the previous clip, never its own clip.
    assert torch.allclose(oracle["shuffled"], log_cosh(nxt.roll(2, dims=0), nxt).mean(dim=(1, 2)))
    own, shuffled, copy = (oracle[k].mean().item() for k in ("own", "shuffled", "copy"))
    assert token_usage(own, shuffled, copy) > 1.0
    assert usage_warning(token_usage(own, shuffled, copy)) is None

    blind = {k: v.mean().item() for k, v in usage_losses(Blind(), prev, nxt, None, 2).items()}
    usage = token_usage(blind["own"], blind["shuffled"], blind["copy"])
    assert blind["own"] < blind["copy"] and usage == 0.0
    assert usage < USAGE_WARNING_BELOW and "another clip's token" in usage_warning(usage)


def test_usage_is_undefined_when_the_decoder_does_no_better_than_copying():
    assert math.isnan(token_usage(0.2, 0.3, 0.2))
    assert usage_warning(float("nan")) is not None


def test_energy_score_of_identical_samples_is_their_distance_and_a_symmetric_pair_scores_zero():
    torch.manual_seed(0)
    truth = torch.randn(2, 5, 4)
    copy = torch.randn(2, 5, 4)
    assert torch.allclose(energy_score(copy[:, None].expand(2, 7, 5, 4), truth), rms_distance(copy, truth))
    assert torch.allclose(energy_score(copy[:, None], truth), rms_distance(copy, truth))
    offset = torch.randn(2, 5, 4)
    symmetric = torch.stack((truth + offset, truth - offset), dim=1)
    # Each sample is |e| from the truth and 2|e| from the other: |e| - 1/2 * 2|e| = 0.
    assert torch.allclose(energy_score(symmetric, truth), torch.zeros(2), atol=1e-6)


def test_energy_score_prefers_samples_spread_like_the_truth():
    """A proper scoring rule: samples from the truth's own distribution beat a point mass at its mean."""
    torch.manual_seed(1)
    truth = torch.randn(4000, 1, 1)
    spread = torch.randn(4000, 16, 1, 1)
    point = torch.zeros(4000, 16, 1, 1)
    assert energy_score(spread, truth).mean() < energy_score(point, truth).mean() - 0.1


def test_energy_terms_are_distance_to_truth_and_mean_distance_between_distinct_samples():
    truth = torch.zeros(1, 1, 2)
    samples = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]]).reshape(1, 3, 1, 2)  # truth at the first
    terms = energy_terms(samples, truth)
    # RMS distance over 2 dimensions: |v| / sqrt(2). To the truth: 0, 5, 4; pairs: 5, 4, 3 (each counted twice).
    root2 = 2**0.5
    assert torch.allclose(terms["distance_to_truth"], torch.tensor([9 / 3 / root2]))
    assert torch.allclose(terms["sample_spread"], torch.tensor([12 / 3 / root2]))
    assert torch.allclose(terms["energy_score"], terms["distance_to_truth"] - 0.5 * terms["sample_spread"])
    assert torch.equal(energy_terms(samples[:, :1], truth)["sample_spread"], torch.zeros(1))
