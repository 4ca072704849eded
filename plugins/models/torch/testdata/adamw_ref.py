"""Reference numbers for adamw_test.go, from torch 1.13's torch.optim.AdamW
and torch.nn.utils.clip_grad_norm_. Run with /usr/bin/python3 (python3-torch);
the test has them pasted in and needs no python."""
import torch

torch.set_default_dtype(torch.float32)
w = torch.nn.Parameter(torch.tensor([[0.5, -1.25, 2.0], [0.1, 0.0, -0.3]]))
b = torch.nn.Parameter(torch.tensor([0.25, -0.5, 1.0]))
never = torch.nn.Parameter(torch.tensor([3.0, -4.0]))  # never gets a gradient
opt = torch.optim.AdamW(
    [{"params": [w], "weight_decay": 0.1}, {"params": [b, never], "weight_decay": 0.0}],
    lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
steps = [
    (0.01, [[0.3, -0.2, 0.05], [1.5, -0.7, 0.0]], [0.1, 0.2, -0.3]),
    (0.02, [[-0.1, 0.4, 0.25], [0.5, 0.9, -2.0]], [0.0, -0.6, 0.3]),
    (0.005, [[1e-4, -3.0, 0.7], [0.2, 0.2, 0.2]], [5.0, 0.01, -0.02]),
]
for i, (lr, gw, gb) in enumerate(steps):
    for g in opt.param_groups:
        g["lr"] = lr
    w.grad = torch.tensor(gw)
    b.grad = torch.tensor(gb)
    opt.step()
    print(f"step {i + 1}: w={w.detach().flatten().tolist()} b={b.detach().tolist()} never={never.detach().tolist()}")

# Clipping: the norm of these gradients is above 1, so they are scaled.
w.grad = torch.tensor([[3.0, -4.0, 1.0], [0.5, 2.0, -1.5]])
b.grad = torch.tensor([0.25, -7.0, 2.0])
total = torch.nn.utils.clip_grad_norm_([b, w], 1.0)  # name order: b, w
print(f"clip: total={total.item()!r} w={w.grad.flatten().tolist()} b={b.grad.tolist()}")
