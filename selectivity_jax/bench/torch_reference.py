"""A PyTorch reference for the speed of the selectivity-regularized ResNet20 train step (the yardstick of
``python -m experiments.accelerator_check`` and ``python -m experiments.benchmark``).

Written the way a PyTorch user would write Leavitt & Morcos (ICLR 2021, Sec. 2.3): the CIFAR ResNet20 of He et al.
(2016, Sec. 4.2: 3 stages of 3 basic blocks, 16/32/64 channels, option-A shortcuts that subsample and zero-pad
channels), the class selectivity index of every residual block's output collected with forward hooks, loss =
cross-entropy - alpha * mean selectivity, ``torch.optim.SGD`` with momentum and weight decay. Timed in eager mode
and under ``torch.compile``, on a batch already on the device (no augmentation: the JAX step also gathers,
crops, flips and normalizes its batch inside the timed step, so the comparison favours PyTorch slightly).

torch is not a dependency of the project: everything here imports it lazily, and `torch_version` says whether it
is installed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

EPS = 1e-7  # the selectivity index's epsilon, as in selectivity_jax/selectivity.py


@dataclasses.dataclass(frozen=True)
class TorchTiming:
    """One timed PyTorch variant: 'eager' or 'compile', with or without the selectivity term."""
    mode: str
    selectivity_term: bool
    images_per_second: float
    step_ms: float
    device: str


def torch_version() -> str | None:
    """The installed torch's version, or None when torch is not importable."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def resnet20(num_classes: int = 10, width: int = 16) -> Any:
    """The CIFAR ResNet20 as a ``torch.nn.Module``; its ``blocks`` are the layers whose outputs the hooks read."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class BasicBlock(nn.Module):
        def __init__(self, in_channels: int, channels: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.stride, self.pad = stride, channels - in_channels

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            shortcut = x
            if self.stride != 1 or self.pad:  # option A: subsample, zero-pad the new channels
                shortcut = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.pad // 2,
                                                                        self.pad - self.pad // 2))
            return F.relu(out + shortcut)

    class ResNet20(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(width)
            blocks, in_channels = [], width
            for stage, channels in enumerate((width, 2 * width, 4 * width)):
                for index in range(3):
                    blocks.append(BasicBlock(in_channels, channels, 2 if stage and not index else 1))
                    in_channels = channels
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(in_channels, num_classes)
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x):
            x = self.blocks(F.relu(self.bn(self.stem(x))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return ResNet20()


def class_selectivity(activation: Any, labels: Any, num_classes: int) -> Any:
    """Mean class selectivity index of a layer's units: activation [B, C, H, W] (or [B, U]), labels [B] -> scalar.

    SI = (mu_max - mu_rest) / (mu_max + mu_rest + eps) over the class means of the classes present in the batch
    (Leavitt & Morcos, ICLR 2021, Sec. 2.2)."""
    import torch.nn.functional as F

    responses = activation.float()
    if responses.dim() > 2:
        responses = responses.mean(dim=tuple(range(2, responses.dim())))
    one_hot = F.one_hot(labels, num_classes).float()                  # [B, classes]
    counts = one_hot.sum(0)                                            # [classes]
    present = counts > 0
    means = (one_hot.t() @ responses) / counts.clamp(min=1)[:, None]  # [classes, U]
    mu_max = means.masked_fill(~present[:, None], float("-inf")).max(0).values
    mu_rest = ((means * present[:, None]).sum(0) - mu_max) / (present.sum() - 1).clamp(min=1)
    return ((mu_max - mu_rest) / (mu_max + mu_rest + EPS)).mean()


def _synchronize(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_train_step(*, batch_size: int = 128, width: int = 16, num_classes: int = 10, alpha: float = 1.0,
                    selectivity_term: bool = True, mode: str = "eager", warmup_steps: int = 3, timed_steps: int = 20,
                    device: str | None = None, seed: int = 0) -> TorchTiming:
    """Images/s of the PyTorch train step (see module doc); ``mode`` 'eager' or 'compile' (``torch.compile`` of the
    forward pass and loss, hooks included)."""
    import torch
    import torch.nn.functional as F

    if mode not in ("eager", "compile"):
        raise ValueError(f"mode must be 'eager' or 'compile'; got {mode!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    model = resnet20(num_classes, width).to(device).train()
    activations: list = []
    for block in model.blocks:
        block.register_forward_hook(lambda module, inputs, output: activations.append(output))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def loss_fn(x, y):
        activations.clear()
        loss = F.cross_entropy(model(x), y)
        if selectivity_term:
            selectivity = torch.stack([class_selectivity(a, y, num_classes) for a in activations]).mean()
            loss = loss - alpha * selectivity
        return loss

    forward = torch.compile(loss_fn) if mode == "compile" else loss_fn
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, 32, 32, generator=generator).to(device)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        forward(x, y).backward()
        optimizer.step()

    for _ in range(warmup_steps):
        step()
    _synchronize(torch, device)
    start = time.perf_counter()
    for _ in range(timed_steps):
        step()
    _synchronize(torch, device)
    seconds = time.perf_counter() - start
    return TorchTiming(mode=mode, selectivity_term=selectivity_term,
                       images_per_second=timed_steps * batch_size / seconds, step_ms=1000 * seconds / timed_steps,
                       device=device)
