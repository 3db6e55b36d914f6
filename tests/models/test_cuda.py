"""Every small registered model computes the same function on a CUDA GPU as on the CPU (fp32, TF32
off), its gradients too, and stays close under bf16 autocast; skipped without a GPU.

On the CPU vitkit's Linear runs oneDNN and attention may take the explicit path; on CUDA both fall
back to F.linear and SDPA (flash / memory-efficient kernels), so this checks the fallbacks compute
the same function as the CPU paths the rest of the suite tests against HF and the identities."""
import pytest
import torch
import torch.nn.functional as F

from vitkit.models import create_model, list_models

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SMALL = [n for n in list_models() if "nano" in n or n.endswith("_28")]


@pytest.fixture(autouse=True)
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _logits(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", SMALL)
def test_cuda_equals_cpu(name):
    torch.manual_seed(0)
    cpu = create_model(name).train()
    gpu = create_model(name).cuda().train()
    gpu.load_state_dict(cpu.state_dict())
    for m in (cpu, gpu):  # no dropout randomness (nn.Dropout and DropPath keep it in .p, Attention in .attn_drop)
        for mod in m.modules():
            for attr in ("p", "attn_drop"):
                if isinstance(getattr(mod, attr, None), float):
                    setattr(mod, attr, 0.0)
    x = torch.randn(4, *cpu.input_size)
    y = torch.randint(0, cpu.cfg.num_classes, (4,))
    outs, grads = [], []
    for m, dev in ((cpu, "cpu"), (gpu, "cuda")):
        out = _logits(m(x.to(dev)))
        F.cross_entropy(out, y.to(dev)).backward()
        outs.append(out.detach().cpu())
        grads.append({k: p.grad.cpu() for k, p in m.named_parameters() if p.grad is not None})
    assert (outs[0] - outs[1]).abs().max() <= 1e-4 * max(1.0, outs[0].abs().max().item())
    assert grads[0].keys() == grads[1].keys()
    for k, g in grads[0].items():
        assert torch.allclose(g, grads[1][k], atol=1e-4, rtol=1e-3), (name, k, (g - grads[1][k]).abs().max())

    gpu.eval()
    with torch.no_grad():
        ref = _logits(gpu(x.cuda()))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = _logits(gpu(x.cuda())).float()
    assert (low - ref).norm() <= 0.05 * ref.norm(), (name, ((low - ref).norm() / ref.norm()).item())
