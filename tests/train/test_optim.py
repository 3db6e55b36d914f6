import pytest
import torch
from torch import nn

from train_toys import TinyNet
from vitkit.train import TrainConfig, build_optimizer, param_groups


def test_one_weight_decay_rule():
    model = TinyNet()
    model.head.weight.requires_grad_(False)  # frozen: in no group
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    got_decay = {names[id(p)] for p in decay["params"]}
    got_none = {names[id(p)] for p in no_decay["params"]}
    assert got_decay == {"embed.weight", "fc.weight"}  # matrices / conv kernels
    # biases and norm weights (ndim < 2) and `pos` (3-D, named in no_weight_decay())
    assert got_none == {"embed.bias", "pos", "norm.weight", "norm.bias", "fc.bias", "head.bias"}


def test_model_without_no_weight_decay_method():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert len(no_decay["params"]) == 3


def test_build_optimizer_is_adamw_with_groups():
    opt = build_optimizer(TinyNet(), TrainConfig(weight_decay=0.1, betas=(0.8, 0.9)))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)


# ---- layer-wise lr decay: MAE's param_groups_lrd -----------------------------------------------
def _mae_get_layer_id_for_vit(name, num_layers):
    """A port of facebookresearch/mae's util/lr_decay.py ``get_layer_id_for_vit``."""
    if name in ["cls_token", "pos_embed"]:
        return 0
    elif name.startswith("patch_embed"):
        return 0
    elif name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    else:
        return num_layers


def _mae_param_groups_lrd(named, num_blocks, weight_decay=0.05, no_weight_decay_list=(), layer_decay=0.75):
    """A port of MAE's ``param_groups_lrd`` over (name, parameter) pairs, returning {name: (lr_scale, wd)}."""
    num_layers = num_blocks + 1
    layer_scales = list(layer_decay ** (num_layers - i) for i in range(num_layers + 1))
    out = {}
    for n, p in named:
        if not p.requires_grad:
            continue
        this_decay = 0.0 if (p.ndim == 1 or n in no_weight_decay_list) else weight_decay
        out[n] = (layer_scales[_mae_get_layer_id_for_vit(n, num_layers)], this_decay)
    return out


def _ours(model, weight_decay=0.05, layer_decay=0.75):
    from vitkit.train.optim import layer_decay_groups
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr_scale"], g["weight_decay"])
            for g in layer_decay_groups(model, weight_decay, layer_decay) for p in g["params"]}


@pytest.mark.parametrize("pos_embed", ["sincos", "learn"])
def test_layer_decay_groups_equal_maes_param_groups_lrd_on_a_vit(pos_embed):
    """Every parameter's lr scale and weight decay are what MAE's param_groups_lrd gives the same ViT (MAE's
    names: its learned table is the parameter ``pos_embed``, vitkit's ``pos_embed.weight``)."""
    from vitkit import create_model
    model = create_model("vit_nano_patch4_28", pos_embed=pos_embed, drop_path_rate=0.1)
    mae_name = lambda n: "pos_embed" if n == "pos_embed.weight" else n  # noqa: E731
    want = _mae_param_groups_lrd([(mae_name(n), p) for n, p in model.named_parameters()], len(model.blocks),
                                 no_weight_decay_list={mae_name(n) for n in model.no_weight_decay()})
    got = {mae_name(n): v for n, v in _ours(model).items()}
    assert got.keys() == want.keys()
    for n in want:
        assert got[n][0] == pytest.approx(want[n][0], rel=1e-12) and got[n][1] == want[n][1], n
    # the scales themselves: 0.75^5 for the embedding, 0.75^(4-i) for block i, 1 for norm and head
    assert got["cls_token"][0] == pytest.approx(0.75 ** 5)
    assert got["blocks.0.attn.qkv.weight"][0] == pytest.approx(0.75 ** 4)
    assert got["blocks.3.mlp.fc2.weight"][0] == pytest.approx(0.75) and got["head.weight"][0] == 1.0


def test_layer_ids_of_other_families():
    """DeiT's distillation token and CeiT's conv stem are embedding (0), CeiT's LCA is after the blocks,
    Swin's stages are one sequence of blocks (a stage's patch merging takes the block before it); a CNN
    has no blocks: a clear error."""
    from vitkit import create_model
    from vitkit.train.optim import layer_ids
    ids, n = layer_ids(create_model("deit_nano_distilled_patch4_28"))
    assert n == 4 and ids["dist_token"] == 0 and ids["head_dist.weight"] == 5
    ids, n = layer_ids(create_model("ceit_nano_28"))
    assert ids["stem.0.weight"] == 0 and ids["lca.attn.qkv.weight"] == n + 1
    ids, n = layer_ids(create_model("swin_nano_patch2_window4_28"))
    assert n == sum(len(s.blocks) for s in create_model("swin_nano_patch2_window4_28").stages)
    assert ids["patch_embed.proj.weight"] == 0 and ids["stages.1.blocks.0.attn.qkv.weight"] == 3
    assert ids["stages.1.downsample.reduction.weight"] == 2 and ids["norm.weight"] == n + 1
    with pytest.raises(ValueError, match="layer_decay needs transformer blocks.*ResNet"):
        layer_ids(create_model("resnet_small_28"))


def test_build_optimizer_gives_each_group_its_lr_scale():
    from vitkit import create_model
    model = create_model("vit_nano_patch4_28")
    opt = build_optimizer(model, TrainConfig(layer_decay=0.5, weight_decay=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert scales == [0.5 ** k for k in range(5, -1, -1)]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert all("lr_scale" not in g for g in build_optimizer(model, TrainConfig()).param_groups)


def test_fit_applies_each_groups_lr_scale(tmp_path):
    from train_toys import ToyLoader, make_data

    from vitkit import create_model
    from vitkit.tasks import Classify
    from vitkit.train import fit
    from vitkit.train import checkpoint as ckpt
    x, y = make_data(32)
    model = create_model("vit_nano_patch2_8", num_classes=4)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-2, min_lr=1e-2, warmup_epochs=0, layer_decay=0.5,
                      out=str(tmp_path), device="cpu")
    fit(model, Classify(), {"train": ToyLoader(x, y, 16)}, cfg)
    groups = torch.load(tmp_path / ckpt.STATE_FILE, weights_only=True)["optimizer"]["param_groups"]
    assert len(groups) > 2 and all(g["lr"] == pytest.approx(1e-2 * g["lr_scale"]) for g in groups)


# ---- LARS: MAE's util/lars.py ------------------------------------------------------------------
class _MAELARS(torch.optim.Optimizer):
    """A port of MAE's util/lars.py (from MoCo v3's moco/optimizer.py)."""

    def __init__(self, params, lr=0, weight_decay=0, momentum=0.9, trust_coefficient=0.001):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                dp = p.grad
                if dp is None:
                    continue
                if p.ndim > 1:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm = torch.norm(p)
                    update_norm = torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(param_norm > 0.,
                                    torch.where(update_norm > 0,
                                                (g["trust_coefficient"] * param_norm / update_norm), one),
                                    one)
                    dp = dp.mul(q)
                param_state = self.state[p]
                if "mu" not in param_state:
                    param_state["mu"] = torch.zeros_like(p)
                mu = param_state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


def test_lars_steps_equal_maes_on_the_same_params_and_grads():
    """Five steps on a matrix, a conv kernel, a zero matrix (no trust ratio: ||w|| = 0), a bias and a
    parameter without gradient, in a decayed and a not-decayed group: the same parameters and momenta."""
    from vitkit.train.optim import LARS
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(6, 4, generator=g), torch.randn(3, 2, 2, 2, generator=g), torch.zeros(5, 3),
            torch.randn(6, generator=g), torch.randn(2, 2, generator=g)]
    ours = [torch.nn.Parameter(t.clone()) for t in init]
    ref = [torch.nn.Parameter(t.clone()) for t in init]

    def groups(ps):
        return [{"params": ps[:3], "weight_decay": 0.05}, {"params": ps[3:], "weight_decay": 0.0}]
    a, b = LARS(groups(ours), lr=0.0), _MAELARS(groups(ref), lr=0.0)
    for step in range(5):
        for opt in (a, b):
            for grp in opt.param_groups:
                grp["lr"] = 0.1 * (step + 1)
        grads = [torch.randn(t.shape, generator=g) for t in init]
        for ps in (ours, ref):
            for p, gr in zip(ps[:4], grads):
                p.grad = gr.clone()
        a.step()
        b.step()
        for p, q in zip(ours, ref):
            torch.testing.assert_close(p, q, atol=0, rtol=0)
    assert not torch.equal(ours[0], init[0]) and torch.equal(ours[4], init[4])  # no grad: untouched
    for p, q in zip(ours[:4], ref[:4]):
        torch.testing.assert_close(a.state[p]["mu"], b.state[q]["mu"], atol=0, rtol=0)


def test_build_optimizer_lars_and_refuses_unknown():
    from vitkit.train.optim import LARS
    opt = build_optimizer(TinyNet(), TrainConfig(optimizer="lars", weight_decay=0.0))
    assert isinstance(opt, LARS) and opt.param_groups[0]["momentum"] == 0.9
    assert opt.param_groups[0]["trust_coefficient"] == 0.001
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer(TinyNet(), type("C", (), {"weight_decay": 0.0, "optimizer": "sgd", "betas": (0.9, 0.999)})())
