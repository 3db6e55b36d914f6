"""Vector quantisers and tokenizers: hand-computed losses and EMA, exact multi-scale reconstruction,
teacher-forcing inputs = the autoregressive steps, a peer (vector_quantize_pytorch), two DDP ranks,
and learning on real digits."""
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from vitkit import data
from vitkit.gen import (HybridTokenizer, MultiScaleVQ, MultiScaleVQTokenizer, TokenizerTask, VectorQuantizer,
                        VQTokenizer, code_stats)


def brute_nearest(rows, codebook):
    """ids of the nearest code by explicit pairwise distances (the oracle for VectorQuantizer.nearest)."""
    return torch.cdist(rows.double(), codebook.double()).argmin(1)


# ---- VectorQuantizer ----------------------------------------------------------------------------
@pytest.mark.parametrize("ema", [False, True])
def test_straight_through_gradient_is_identity_and_skips_the_codebook(ema):
    vq = VectorQuantizer(16, 4, ema=ema, restart_dead=False, data_init=False).train()
    with torch.no_grad():
        vq.embed.normal_()
    codebook = vq.embed.detach().clone()  # before the EMA step of this training forward
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    w = torch.randn(2, 4, 3, 3)
    z_q, ids, _ = vq(z)
    # forward value: the nearest code at every position
    assert torch.equal(ids.flatten(), brute_nearest(z.detach().movedim(1, -1).reshape(-1, 4), codebook))
    torch.testing.assert_close(z_q, codebook[ids].movedim(-1, 1), atol=1e-6, rtol=0)
    (w * z_q).sum().backward()
    torch.testing.assert_close(z.grad, w, atol=0, rtol=0)  # d(sum w z_q)/dz = w exactly
    assert vq.embed.grad is None  # no gradient reaches the codebook through z_q


def test_commitment_and_codebook_losses_by_hand():
    beta = 0.3
    vq = VectorQuantizer(5, 3, beta=beta, ema=False, restart_dead=False, data_init=False).train()
    with torch.no_grad():
        vq.embed.copy_(torch.randn(5, 3))
    z = torch.randn(2, 3, 2, 2, requires_grad=True)
    _, ids, info = vq(z)
    q = vq.embed.detach()[ids].movedim(-1, 1)  # (B, D, h, w)
    n = z.numel()
    commitment = beta * ((z.detach() - q) ** 2).sum() / n
    codebook = ((z.detach() - q) ** 2).sum() / n
    torch.testing.assert_close(info["commitment"], commitment)
    torch.testing.assert_close(info["codebook"], codebook)
    info["loss_vq"].backward()
    # the commitment term moves z only, the codebook term moves the codes only
    torch.testing.assert_close(z.grad, 2 * beta * (z.detach() - q) / n)
    expected = torch.zeros(5, 3).index_add_(0, ids.flatten(), (2 * (q - z.detach()) / n).movedim(1, -1).reshape(-1, 3))
    torch.testing.assert_close(vq.embed.grad, expected)


def test_ema_has_no_codebook_loss_and_no_codebook_parameter():
    vq = VectorQuantizer(8, 4, ema=True)
    assert "embed" not in dict(vq.named_parameters()) and "embed" in dict(vq.named_buffers())
    _, _, info = vq.train()(torch.randn(2, 4, 3, 3))
    assert info["codebook"] == 0 and info["loss_vq"] == info["commitment"]


def test_ema_update_equals_the_formula_on_a_tiny_example():
    d, eps = 0.9, 1e-5
    vq = VectorQuantizer(3, 2, ema=True, decay=d, eps=eps, restart_dead=False, data_init=False).train()
    e0 = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    n0 = torch.tensor([2.0, 1.0, 0.5])
    m0 = e0 * n0[:, None]
    with torch.no_grad():
        vq.embed.copy_(e0), vq.cluster_size.copy_(n0), vq.embed_avg.copy_(m0)
    z = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [9.0, 1.0], [8.0, -1.0]])  # codes 0, 0, 1, 1; code 2 unused
    _, ids, info = vq(z.t().reshape(1, 2, 4))  # (B=1, D=2, 4 positions)
    assert ids.flatten().tolist() == [0, 0, 1, 1]
    # N_j = d N_j + (1 - d) n_j;  m_j = d m_j + (1 - d) sum z;  e_j = m_j / ((N_j + eps) / (N + K eps) * N)
    n = torch.tensor([0.9 * 2 + 0.1 * 2, 0.9 * 1 + 0.1 * 2, 0.9 * 0.5])
    m = torch.stack([0.9 * m0[0] + 0.1 * torch.tensor([0.0, 1.0]),
                     0.9 * m0[1] + 0.1 * torch.tensor([17.0, 0.0]),
                     0.9 * m0[2]])
    total = n.sum()
    e = m / ((n + eps) / (total + 3 * eps) * total)[:, None]
    torch.testing.assert_close(vq.cluster_size, n)
    torch.testing.assert_close(vq.embed_avg, m)
    torch.testing.assert_close(vq.embed, e)
    assert info["usage"] == pytest.approx(2 / 3)
    assert info["perplexity"] == pytest.approx(2.0)  # two codes, equally often


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ema_update_matches_vector_quantize_pytorch(seed):
    """Same codebook, same batch: the same codes and the same EMA update. Seeded (it drew from the global
    RNG, so its inputs depended on which tests ran before it in the worker), and compared at float32's
    relative precision: the two implementations sum in another order, 1e-5 apart on codes of size ~2."""
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(seed)
    k, dim = 16, 4
    peer = vqp.VectorQuantize(dim=dim, codebook_size=k, decay=0.9, eps=1e-5, kmeans_init=False).train()
    ours = VectorQuantizer(k, dim, decay=0.9, eps=1e-5, restart_dead=False, data_init=False).train()
    with torch.no_grad():
        ours.embed.normal_(), ours.embed_avg.copy_(ours.embed), ours.cluster_size.uniform_(0.5, 2.0)
        peer._codebook.embed.copy_(ours.embed[None])
        peer._codebook.embed_avg.copy_(ours.embed_avg[None])
        peer._codebook.cluster_size.copy_(ours.cluster_size[None])
    x = torch.randn(2, 40, dim)
    _, peer_ids, _ = peer(x)
    _, ids, _ = ours(x.transpose(1, 2))
    assert torch.equal(peer_ids, ids)  # nearest neighbours on the same codebook
    torch.testing.assert_close(ours.embed, peer._codebook.embed[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.cluster_size, peer._codebook.cluster_size[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("ema", [False, True])
def test_dead_codes_are_restarted_from_batch_vectors(ema):
    vq = VectorQuantizer(6, 2, ema=ema, dead_after=2, data_init=False).train()
    far = torch.full((4, 2), 100.0) + torch.arange(4.0)[:, None]  # codes 2..5 are never nearest
    with torch.no_grad():
        vq.embed.copy_(torch.cat([torch.tensor([[0.0, 0.0], [1.0, 1.0]]), far]))
        if ema:
            vq.embed_avg.copy_(vq.embed)
    z = torch.rand(1, 2, 5, 5)
    rows = z.movedim(1, -1).reshape(-1, 2)
    vq(z)
    assert (vq.embed[2:] > 99).all()  # unused once: not yet dead (EMA moves them a little)
    assert vq.unused_steps.tolist() == [0, 0, 1, 1, 1, 1]
    vq(z)
    new = vq.embed[2:].detach()
    assert (new < 2).all()  # restarted ...
    assert all((rows == v).all(1).any() for v in new)  # ... from rows of the batch
    assert vq.unused_steps[2:].tolist() == [0, 0, 0, 0]
    if ema:
        assert torch.equal(vq.cluster_size[2:], torch.ones(4)) and torch.equal(vq.embed_avg[2:], new)


def test_data_init_and_stats():
    vq = VectorQuantizer(4, 2, ema=True, restart_dead=False).train()
    z = torch.randn(1, 2, 6, 6)
    vq(z)
    rows = z.movedim(1, -1).reshape(-1, 2)
    assert bool(vq.initted)
    usage, ppl = code_stats(torch.tensor([3, 1, 0, 0]))
    entropy = -(0.75 * torch.log(torch.tensor(0.75)) + 0.25 * torch.log(torch.tensor(0.25)))
    assert usage == 0.5 and ppl == pytest.approx(entropy.exp().item())
    # before the EMA step every code was a batch row; after it each is a decayed blend, still near the data
    assert vq.embed.abs().max() <= rows.abs().max() + 1e-5


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="code dim"):
        VectorQuantizer(8, 4)(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="strictly increasing"):
        MultiScaleVQ(8, 4, scales=(1, 3, 2))
    with pytest.raises(ValueError, match="divisible"):
        VQTokenizer(img_size=30)
    with pytest.raises(ValueError, match="last scale"):
        MultiScaleVQTokenizer(scales=(1, 2, 4))


# ---- MultiScaleVQ (VAR) ---------------------------------------------------------------------------
def test_multiscale_residual_vq_is_exact_when_the_codebook_holds_the_residuals():
    """phi = identity (quant_resi=0). The codebook is built from the residuals of a by-hand run of VAR's
    Algorithm 1, so every scale's residual is a code and the last scale takes f - f^ exactly."""
    scales, c, side = (1, 2, 3, 5), 3, 5
    f = torch.randn(2, c, side, side)
    rest, f_hat, codes, expected_ids = f.clone(), torch.zeros_like(f), [], []
    for s in scales:
        r = F.interpolate(rest, size=(s, s), mode="area") if s != side else rest
        rows = r.movedim(1, -1).reshape(-1, c)
        expected_ids.append(torch.arange(rows.shape[0]) + sum(x.shape[0] for x in codes))
        codes.append(rows)
        h = F.interpolate(r, size=(side, side), mode="bicubic") if s != side else r
        f_hat, rest = f_hat + h, rest - h
    codebook = torch.cat(codes)  # (sum 2 s^2, C)
    msvq = MultiScaleVQ(codebook.shape[0], c, scales, quant_resi=0.0, restart_dead=False, data_init=False).eval()
    with torch.no_grad():
        msvq.vq.embed.copy_(codebook)
    ids_list, got = msvq.quantize(f)
    for k, (ids, want) in enumerate(zip(ids_list, expected_ids)):
        assert torch.equal(ids.flatten(), want), k
    torch.testing.assert_close(got, f, atol=1e-5, rtol=0)
    torch.testing.assert_close(msvq.ids_to_fhat(ids_list), f, atol=1e-5, rtol=0)
    f_ste, _, info = msvq(f)
    torch.testing.assert_close(f_ste, f, atol=1e-5, rtol=0)
    assert info["loss_vq"] > 0  # the coarse scales' f^_k still differ from f (VAR averages over scales)


def test_multiscale_loss_and_phi_follow_var():
    torch.manual_seed(1)
    msvq = MultiScaleVQ(32, 4, (1, 2, 3, 4), quant_resi=0.5, num_phi=4, beta=0.25, restart_dead=False,
                        data_init=False).eval()
    with torch.no_grad():
        msvq.vq.embed.normal_()
    f = torch.randn(2, 4, 4, 4, requires_grad=True)
    f_ste, ids_list, info = msvq(f)
    # by hand: f^_k cumulative, phi_k = (1 - a) h + a conv(h), the conv chosen by VAR's ticks
    ticks = [1 / 12, 1 / 12 + (1 - 2 / 12) / 3, 1 / 12 + 2 * (1 - 2 / 12) / 3, 1 - 1 / 12]
    f_hat, loss = torch.zeros_like(f), 0.0
    for k, ids in enumerate(ids_list):
        e = msvq.vq.embed.detach()[ids].permute(0, 3, 1, 2)
        h = F.interpolate(e, size=(4, 4), mode="bicubic") if ids.shape[-1] != 4 else e
        conv = msvq.phi.phis[min(range(4), key=lambda i: abs(ticks[i] - k / 3))]
        assert conv is msvq.phi.phis[k]  # 4 scales, 4 convs: one each
        h = 0.5 * h + 0.5 * F.conv2d(h, conv.weight, conv.bias, padding=1)
        f_hat = f_hat + h
        loss = loss + 0.25 * F.mse_loss(f.detach(), f_hat.detach()) + F.mse_loss(f_hat, f.detach())
    torch.testing.assert_close(f_ste, f_hat, atol=1e-5, rtol=0)
    torch.testing.assert_close(info["loss_vq"], loss / 4, atol=1e-6, rtol=1e-5)
    w = torch.randn_like(f)
    (w * f_ste).sum().backward()
    torch.testing.assert_close(f.grad, w, atol=0, rtol=0)  # straight through the whole f^


def test_multiscale_ema_counts_the_residual_rows_of_every_scale():
    d = 0.9
    msvq = MultiScaleVQ(16, 4, (1, 2, 4), decay=d, restart_dead=False, data_init=False).train()
    _, ids_list, _ = msvq(torch.randn(3, 4, 4, 4))
    rows = 3 * (1 + 4 + 16)
    assert msvq.vq.cluster_size.sum().item() == pytest.approx(d * 16 + (1 - d) * rows)
    counts = torch.bincount(torch.cat([i.flatten() for i in ids_list]), minlength=16).float()
    torch.testing.assert_close(msvq.vq.cluster_size, d * torch.ones(16) + (1 - d) * counts)


def test_teacher_inputs_and_step_agree():
    tok = MultiScaleVQTokenizer(channels=(8, 8, 8), embed_dim=4, codebook_size=32, quant_resi=0.5).eval()
    with torch.no_grad():
        tok.quantizer.vq.embed.normal_()
    images = torch.randn(3, 1, 28, 28)
    ids_list = tok.encode(images)
    assert [tuple(i.shape) for i in ids_list] == [(3, s, s) for s in (1, 2, 3, 4, 5, 7)]
    teacher = tok.teacher_inputs(ids_list)
    assert teacher.shape == (3, 4 + 9 + 16 + 25 + 49, 4)
    f, rows = None, []
    for k, ids in enumerate(ids_list):
        f, nxt = tok.step(f, k, ids)
        if nxt is not None:
            rows.append(nxt)
    assert nxt is None and len(rows) == 5
    torch.testing.assert_close(torch.cat(rows, 1), teacher, atol=1e-6, rtol=0)
    _, f_hat = tok.quantizer.quantize(tok.latent(images))
    torch.testing.assert_close(f, f_hat, atol=1e-5, rtol=0)
    # row-major by hand: scale 1's input is area(f^ after scale 0, 2x2), i.e. h_0 pooled
    h0 = tok.quantizer.embed_scale(0, ids_list[0])
    torch.testing.assert_close(teacher[:, :4], F.interpolate(h0, size=(2, 2), mode="area").flatten(2).transpose(1, 2))
    torch.testing.assert_close(tok.decode_ids(ids_list), tok.decode_latent(f))


# ---- tokenizers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [28, 16])
def test_tokenizer_shapes(size):
    x = torch.randn(2, 1, size, size)
    g = size // 4
    vq = VQTokenizer(img_size=size, channels=(8, 8, 8), embed_dim=4, codebook_size=16).eval()
    assert vq.grid == (g, g) and vq.embed_dim == 4 and vq.codebook_size == 16
    ids = vq.encode(x)
    assert ids.shape == (2, g, g) and ids.dtype == torch.int64 and vq.decode_ids(ids).shape == x.shape
    recon, info = vq(x)
    assert recon.shape == x.shape and set(info) == {"loss_vq", "usage", "perplexity"}
    hy = HybridTokenizer(img_size=size, channels=(8, 8, 8), embed_dim=4, codebook_size=16).eval()
    ids_list, residual = hy.encode_hybrid(x)
    assert hy.scales[-1] == g and [i.shape[-1] for i in ids_list] == list(hy.scales)
    assert residual.shape == (2, 4, g, g) and hy.decode_ids(ids_list).shape == x.shape
    # the continuous latent f = f^ + residual is what eval-mode forward decodes
    f_hat = hy.quantizer.ids_to_fhat(ids_list)
    torch.testing.assert_close(hy.decode_latent(f_hat + residual), hy(x)[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(hy.decode_latent(f_hat), hy(x)[1]["recon_discrete"], atol=1e-5, rtol=1e-4)


def test_task_loss_and_eval_metrics():
    x = torch.randn(4, 1, 16, 16)
    task = TokenizerTask()
    tok = VQTokenizer(img_size=16, channels=(8, 8, 8), embed_dim=4, codebook_size=16).eval()  # eval: no EMA step
    loss, metrics = task.loss(tok, (x, torch.zeros(4)))
    recon, info = tok(x)
    torch.testing.assert_close(loss, F.mse_loss(recon, x) + info["loss_vq"])
    assert set(metrics) == {"loss", "mse", "loss_vq", "usage", "perplexity"}
    hy = HybridTokenizer(img_size=16, channels=(8, 8, 8), embed_dim=4, codebook_size=16).eval()
    sums = task.eval_metrics(hy, (x, torch.zeros(4)))
    assert sums["count"] == 4 and set(sums) == {"loss_sum", "mse_sum", "psnr_sum", "usage_sum", "mse_discrete_sum",
                                                "count"}
    with torch.no_grad():
        recon, info = hy(x)
    torch.testing.assert_close(sums["mse_sum"], F.mse_loss(recon, x, reduction="sum") / x[0].numel())
    discrete = F.mse_loss(info["recon_discrete"], x, reduction="sum") / x[0].numel()
    torch.testing.assert_close(sums["mse_discrete_sum"], discrete)


def test_psnr_on_unnormalised_pixels():
    task = TokenizerTask(mean=(0.5,), std=(0.25,))
    images = torch.full((2, 1, 4, 4), 0.0)  # pixel 0.5
    recon = images + 0.1 / 0.25             # pixel 0.6: MSE 0.01 -> 20 dB
    torch.testing.assert_close(task.psnr(recon, images), torch.full((2,), 20.0))
    assert TokenizerTask().psnr(recon, images)[0] == pytest.approx(10 * torch.log10(torch.tensor(1 / 0.16)).item())


def _digits(n=32):
    bundle = data.build("mnist5k")
    x = torch.stack([bundle.train[i][0] for i in range(n)])
    return data.eval_transform(bundle)(x), bundle


def _fit(model, task, x, steps, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr)
    first = None
    for _ in range(steps):
        loss, metrics = task.loss(model, (x, None))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = metrics["mse"].item() if first is None else first
    return first, metrics


@pytest.mark.slow
def test_vq_tokenizer_learns_real_digits():
    x, bundle = _digits()
    task = TokenizerTask(bundle.mean, bundle.std)
    model = VQTokenizer(channels=(16, 16, 16), embed_dim=8, codebook_size=64, num_res_blocks=0)
    first, last = _fit(model, task, x, 60)
    assert last["mse"] < 0.3 * first, (first, last)
    assert last["usage"] > 0.25  # restarts keep the codebook alive
    sums = task.eval_metrics(model.eval(), (x, None))
    assert sums["psnr_sum"] / sums["count"] > 13.0


@pytest.mark.slow
def test_hybrid_reconstruction_beats_discrete_only():
    x, bundle = _digits()
    task = TokenizerTask(bundle.mean, bundle.std)
    model = HybridTokenizer(channels=(16, 16, 16), embed_dim=8, codebook_size=64, num_res_blocks=0)
    first, _ = _fit(model, task, x, 90)  # HART's training: discrete-only or continuous latent, p = 0.5
    model.eval()
    ids_list, residual = model.encode_hybrid(x)
    f_hat = model.quantizer.ids_to_fhat(ids_list)
    with torch.no_grad():
        mse_hybrid = F.mse_loss(model.decode_latent(f_hat + residual), x).item()
        mse_discrete = F.mse_loss(model.decode_ids(ids_list), x).item()
    assert mse_hybrid < 0.5 * first
    assert mse_hybrid < 0.9 * mse_discrete, (mse_hybrid, mse_discrete)


# ---- two DDP ranks ------------------------------------------------------------------------------------
WORKER = """
import sys, torch
import torch.distributed as dist
from vitkit.gen import VectorQuantizer
dist.init_process_group("gloo")
r = dist.get_rank()
torch.manual_seed(0)
z = torch.randn(8, 4, 3, 3)[4 * r: 4 * r + 4]         # this rank's half of the global batch
out = {}
for restart in (False, True):
    vq = VectorQuantizer(32, 4, decay=0.8, restart_dead=restart, dead_after=1, data_init=False).train()
    with torch.no_grad():
        vq.embed.copy_(torch.randn(32, 4, generator=torch.Generator().manual_seed(1)))
        vq.embed_avg.copy_(vq.embed)
    _, _, info = vq(z)
    out[restart] = {k: v.clone() for k, v in vq.state_dict().items()}
    out[restart]["usage"] = info["usage"]
torch.save(out, sys.argv[1] + f"/rank{r}.pt")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ema_statistics_are_all_reduced_across_ranks(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # two ranks started directly (no torchrun launcher: one process less on a small machine)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(r),
                                   "WORLD_SIZE": "2", "LOCAL_RANK": str(r)})
             for r in (0, 1)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # one process with the global batch gives the same EMA state (no restarts)
    torch.manual_seed(0)
    z = torch.randn(8, 4, 3, 3)
    vq = VectorQuantizer(32, 4, decay=0.8, restart_dead=False, data_init=False).train()
    with torch.no_grad():
        vq.embed.copy_(torch.randn(32, 4, generator=torch.Generator().manual_seed(1)))
        vq.embed_avg.copy_(vq.embed)
    _, _, info = vq(z)
    for k, v in vq.state_dict().items():
        torch.testing.assert_close(r0[False][k], v, atol=1e-6, rtol=0)
        torch.testing.assert_close(r1[False][k], v, atol=1e-6, rtol=0)
    assert r0[False]["usage"] == info["usage"]
    # with restarts (every code unused by the global batch is dead at once) the ranks still agree
    assert (r0[True]["unused_steps"] == 0).all()
    for k in r0[True]:
        assert torch.equal(r0[True][k], r1[True][k]), k
