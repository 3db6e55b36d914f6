"""Judging generated images without any download: a classifier-based FID, class accuracy, PSNR.

FID (Heusel et al. 2017) compares Gaussian fits of feature sets,

    FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})

with Inception features in the paper. Here the features are the pooled pre-logits of a vitkit
classifier trained on the same data (e.g. the demo run on mnist5k), so the number is comparable
between generators evaluated with the same classifier, not with published FIDs.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}), the trace of the root from the eigenvalues.

    (S1 S2) is similar to the symmetric PSD matrix S1^{1/2} S2 S1^{1/2}, so Tr((S1 S2)^{1/2}) is the
    sum of the square roots of that matrix's eigenvalues: stable, no complex sqrtm.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def gaussian_fit(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (N, D) features, the unbiased covariance as in the FID reference code."""
    f = features.double().cpu().numpy()
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


@torch.no_grad()
def classifier_features(classifier: nn.Module, images: torch.Tensor, batch_size: int = 256
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled pre-logit features (N, D), logits (N, K)) of normalised images, in eval mode."""
    classifier.eval()
    feats, logits = [], []
    for x in images.split(batch_size):
        f = classifier.forward_head(classifier.forward_features(x), pre_logits=True)
        feats.append(f.float())
        logits.append(classifier.forward_head(classifier.forward_features(x)).float())
    return torch.cat(feats), torch.cat(logits)


def classifier_fid(classifier: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between real and generated normalised images (B, C, H, W) in the classifier's feature space."""
    fr, _ = classifier_features(classifier, real)
    ff, _ = classifier_features(classifier, fake)
    return frechet_distance(*gaussian_fit(fr), *gaussian_fit(ff))


def class_accuracy(classifier: nn.Module, fake: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of generated images the classifier assigns to the class they were generated for."""
    _, logits = classifier_features(classifier, fake)
    return float((logits.argmax(1) == labels.to(logits.device)).float().mean())


def psnr(recon: torch.Tensor, target: torch.Tensor, max_value: float = 1.0) -> float:
    """10 log10(max^2 / MSE) over the whole batch, images in [0, max_value]."""
    mse = float(((recon.double() - target.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * float(np.log10(max_value ** 2 / mse))
