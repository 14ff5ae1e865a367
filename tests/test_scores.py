"""DD-Ranking's scores against values computed by hand."""

import math

import pytest

from latentdistill.evaluate.scores import augmentation_robust_score, label_robust_score


def test_label_robust_score_by_hand():
    # synthetic 0.50, random 0.30, full 0.85: IOR 0.20, HLR 0.35, alpha = 0.5*0.20 - 0.5*0.35 = -0.075
    result = label_robust_score(0.50, 0.30, 0.85)
    assert result["ior"] == pytest.approx(0.20)
    assert result["hlr"] == pytest.approx(0.35)
    assert result["alpha"] == pytest.approx(-0.075)
    assert result["score"] == pytest.approx((math.exp(-0.075) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert result["score"] == pytest.approx(0.23820, abs=1e-5)


def test_label_robust_score_bounds():
    # the full data itself: no gap, gain over random = full - random; a set equal to random and far from full: worst
    assert label_robust_score(1.0, 0.0, 1.0)["score"] == pytest.approx((math.exp(0.5) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert label_robust_score(0.0, 0.0, 1.0)["score"] == pytest.approx((math.exp(-0.5) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert label_robust_score(0.0, 1.0, 1.0, weight=0.5)["score"] == pytest.approx(0.0)
    assert label_robust_score(1.0, 0.0, 0.0, weight=1.0)["score"] == pytest.approx(1.0)


def test_augmentation_robust_score_by_hand():
    # with augmentation +0.15 over random, without +0.05: beta = 0.5*0.15 + 0.5*0.05 = 0.10
    result = augmentation_robust_score(0.45, 0.30, 0.35, 0.30)
    assert result["beta"] == pytest.approx(0.10)
    assert result["score"] == pytest.approx((math.exp(0.10) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert result["score"] == pytest.approx(0.31369, abs=1e-5)
    assert augmentation_robust_score(0.45, 0.30, 0.35, 0.30, gamma=1.0)["beta"] == pytest.approx(0.15)
