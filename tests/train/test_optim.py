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
