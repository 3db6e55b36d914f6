"""vitkit's Linear (oneDNN GEMMs on the CPU) computes F.linear and its gradients."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitkit
from vitkit.layers import Linear, fast_linear, fast_linear_enabled


def _grads(m, x, g):
    x = x.detach().requires_grad_(True)
    m.zero_grad()
    y = m(x)
    y.backward(g)
    return y.detach(), x.grad, m.weight.grad.clone(), m.bias.grad.clone()


# (input shape, out features): wider and narrower outputs take the two orders of dW = g^T x
@pytest.mark.parametrize("shape,out", [((3, 7, 64), 192), ((50, 384), 1152), ((2, 4, 5, 96), 288),
                                       ((64, 512), 128), ((4, 17, 256), 256)])
def test_forward_and_backward_equal_f_linear(shape, out, onednn_everywhere):
    torch.manual_seed(0)
    m = Linear(shape[-1], out)
    x = torch.randn(*shape)
    g = torch.randn(*shape[:-1], out)
    assert "OneDNN" in type(m(x.requires_grad_()).grad_fn).__name__
    fast = _grads(m, x, g)
    with fast_linear(False):
        ref = _grads(m, x, g)
    for a, b in zip(fast, ref):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()


def test_the_onednn_path_is_taken_and_can_be_turned_off():
    if not fast_linear_enabled():
        pytest.skip("this PyTorch build has no oneDNN")
    m, x = Linear(256, 256), torch.randn(16, 256, requires_grad=True)  # big enough for the oneDNN path
    assert "OneDNN" in type(m(x).grad_fn).__name__
    with fast_linear(False):
        assert not fast_linear_enabled()
        assert "OneDNN" not in type(m(x).grad_fn).__name__
    m64 = Linear(256, 256).double()  # other dtypes take F.linear
    assert torch.equal(m64(x.double()), F.linear(x.double(), m64.weight, m64.bias))


def test_frozen_weights_and_no_bias():
    torch.manual_seed(0)
    m = Linear(256, 128, bias=False)
    m.weight.requires_grad_(False)
    x = torch.randn(40, 256, requires_grad=True)
    m(x).sum().backward()
    assert torch.allclose(x.grad, m.weight.sum(0).expand(40, 256), atol=1e-6)


def test_it_is_an_nn_linear_with_the_same_state_dict():
    m = Linear(4, 3)
    assert isinstance(m, nn.Linear) and set(m.state_dict()) == {"weight", "bias"}
    model = vitkit.create_model("vit_nano_patch4_28")
    assert all(type(x) is Linear for x in model.modules() if isinstance(x, nn.Linear))


def test_tiny_calls_take_f_linear():
    m, x = Linear(128, 10), torch.randn(1, 128, requires_grad=True)  # a classifier head at batch 1
    assert "OneDNN" not in type(m(x).grad_fn).__name__


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_fused_linear_gelu_equals_the_two_steps(approximate, onednn_everywhere):
    from vitkit.layers.linear import linear_gelu
    torch.manual_seed(0)
    x, w, b = torch.randn(40, 64), torch.randn(256, 64) * 0.1, torch.randn(256)
    ref = F.gelu(F.linear(x, w, b), approximate=approximate)
    with torch.inference_mode():  # the fused oneDNN post-op
        assert torch.allclose(linear_gelu(x, w, b, approximate), ref, atol=1e-5)
    x.requires_grad_(True)  # training: the unfused path, with gradients
    y = linear_gelu(x, w, b, approximate)
    assert torch.allclose(y, ref, atol=1e-5) and y.grad_fn is not None


def test_mlp_inference_and_training_agree(onednn_everywhere):
    from vitkit.layers import Mlp
    torch.manual_seed(0)
    m, x = Mlp(64, 256), torch.randn(3, 20, 64, requires_grad=True)
    with torch.inference_mode():
        fused = m(x)                                  # fc1 + GELU as one oneDNN GEMM
    nodes = []
    m.fc2.register_forward_hook(lambda mod, args, out: nodes.append(type(out.grad_fn).__name__))
    y = m(x)                                          # training: fc1, GELU, fc2 on the autograd path
    assert nodes == ["_OneDNNLinearBackward"] and torch.allclose(fused, y, atol=1e-5)


def test_inference_sees_every_optimizer_update():
    """Fused AdamW updates weights in place without bumping their version counter: nothing may cache
    a copy of the weight between calls (a cached oneDNN-packed weight once evaluated stale weights)."""
    import copy
    import pickle
    torch.manual_seed(0)
    m, x = Linear(256, 128), torch.randn(40, 256)
    opt = torch.optim.AdamW(m.parameters(), lr=0.1, fused=True)
    for _ in range(2):
        with torch.no_grad():
            assert torch.allclose(m(x), F.linear(x, m.weight, m.bias), atol=1e-5)
        m(x).sum().backward()
        opt.step()
    assert set(m.state_dict()) == {"weight", "bias"}
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        with torch.no_grad():
            assert torch.allclose(clone(x), m(x), atol=1e-6)


def test_freeze_packs_weights_and_computes_the_same_function():
    from vitkit.export import freeze
    torch.manual_seed(0)
    model = vitkit.create_model("vit_nano_patch4_28").eval()
    x = torch.randn(32, *model.input_size)
    frozen = freeze(model)
    packed = [m for m in frozen.modules() if isinstance(m, Linear) and m._packed is not None]
    assert packed and all(not p.requires_grad for p in frozen.parameters()) and not frozen.training
    assert all(p.requires_grad for p in model.parameters())                    # the original is untouched
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(frozen(x), ref)                                     # bit for bit, as documented
        if fast_linear_enabled():
            assert packed[0]._packed_for(torch.randn(64, 64, packed[0].in_features)).is_mkldnn
    # input gradients through a frozen model (saliency maps) use the plain weights
    xg = x.clone().requires_grad_(True)
    frozen(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    # a weight changed in place is seen at once (the packed copy is dropped), copies carry no packing
    with torch.no_grad():
        for m in packed:
            m.weight.mul_(0.5)
        model_half = vitkit.create_model("vit_nano_patch4_28").eval()
        model_half.load_state_dict(frozen.state_dict())
        assert torch.allclose(frozen(x), model_half(x), atol=1e-5)
        assert all(m._packed_for(torch.randn(64, 64, m.in_features)) is None for m in packed)  # stale: dropped
    import copy
    assert all(m._packed is None for m in copy.deepcopy(frozen).modules() if isinstance(m, Linear))


def test_cpu_autocast_without_native_bf16_takes_f_linear_in_bf16(onednn_everywhere, monkeypatch):
    """Under CPU autocast on a CPU without native bf16 the layer is F.linear's (bf16 out, as autocast casts
    it), forward and backward. (With native bf16: oneDNN's bf16 GEMM, tests/layers/test_bf16.py.)"""
    import vitkit.layers.linear as L
    monkeypatch.setattr(L, "native_bf16", lambda: False)
    lin = Linear(32, 48)
    x = torch.randn(8, 32, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        y = lin(x)
    y.float().sum().backward()
    assert "OneDNN" not in type(y.grad_fn).__name__
    assert y.dtype == torch.bfloat16 and lin.weight.grad.dtype == torch.float32 and x.grad is not None
    assert torch.allclose(y.float(), F.linear(x, lin.weight, lin.bias), atol=0.1)
