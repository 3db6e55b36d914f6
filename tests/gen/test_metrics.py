"""Classifier FID and friends: closed forms the numbers must match."""
import numpy as np
import torch

from vitkit.gen.metrics import class_accuracy, classifier_fid, frechet_distance, gaussian_fit, psnr
from vitkit.models import create_model


def test_frechet_distance_of_diagonal_gaussians_has_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    want = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert abs(frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) - want) < 1e-9


def test_frechet_distance_matches_scipy_sqrtm_on_full_covariances():
    from scipy.linalg import sqrtm
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert abs(frechet_distance(mu1, s1, mu2, s2) - ref) < 1e-6


def test_fid_is_zero_for_the_same_set_and_grows_with_a_shift():
    torch.manual_seed(0)
    clf = create_model("vit_nano_patch2_8", num_classes=10, in_chans=1)
    x = torch.randn(64, 1, 8, 8)
    assert abs(classifier_fid(clf, x, x)) < 1e-6
    assert classifier_fid(clf, x, x + 0.5) > classifier_fid(clf, x, x + 0.1) > 0


def test_class_accuracy_and_psnr():
    torch.manual_seed(0)
    clf = create_model("vit_nano_patch2_8", num_classes=10, in_chans=1)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        pred = clf.eval()(x).argmax(1)
    assert class_accuracy(clf, x, pred) == 1.0
    assert class_accuracy(clf, x, (pred + 1) % 10) == 0.0
    t = torch.rand(4, 1, 8, 8)
    assert abs(psnr(t + 0.1, t) - 20.0) < 1e-6  # MSE 0.01 -> 20 dB
    mu, cov = gaussian_fit(torch.randn(100, 3))
    assert mu.shape == (3,) and cov.shape == (3, 3)
