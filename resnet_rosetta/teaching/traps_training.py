"""Measurements of the training traps (7-13): BatchNorm statistics, train/eval modes,
optimizers, initialisation and the loss, on real networks with random weights.

Each measurement runs the two frameworks side by side from the same canonical
weights and the same batches (or the same gradients), so any difference is the
framework's rule, not the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from resnet_rosetta.frameworks import framework_of, import_frameworks
from resnet_rosetta.teaching.measured import BATCH, BITE, Anchor, Measured, anchor, g, setting
from resnet_rosetta.teaching.naive import naive_port
from shared_specs import ResNetSpec, layer_table, make_plan, resolve_spec
from shared_specs import plan as P


def _batches(a: Anchor, steps: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.normal(size=a.x.shape).astype(np.float32) for _ in range(steps)]


def _train_forward(model: Any, batches: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Training-mode forward passes (no optimizer): only the BN running statistics move.
    Returns the model's canonical weights afterwards."""
    framework = framework_of(model)
    for x in batches:
        framework.forward(model, x, training=True)
    return framework.export_weights(model)


def _bn_names(a: Anchor) -> list[str]:
    return [op.name for op in make_plan(a.spec).ops() if isinstance(op, P.BatchNorm)]


def _stat_drift(a: Anchor, ref: dict[str, np.ndarray], other: dict[str, np.ndarray], stat: str
                ) -> tuple[float, str | None]:
    """Largest relative difference of a running statistic over all BNs, and the first BN beyond BITE."""
    worst, first = 0.0, None
    for name in _bn_names(a):
        r, o = ref[f"{name}.{stat}"], other[f"{name}.{stat}"]
        rel = float(np.abs(r - o).max() / np.abs(r).max())
        worst = max(worst, rel)
        if first is None and rel > BITE:
            first = name
    return worst, first


def bn_momentum(preset: ResNetSpec | str = "cifar_resnet20", hw: int = 32, steps: int = 3) -> Measured:
    """Trap 7: running means after training-mode passes, torch's momentum number typed into Keras."""
    a = anchor(preset, hw)
    batches = _batches(a, steps)
    source = _train_forward(a.torch_model(), batches)
    good, _ = _stat_drift(a, source, _train_forward(a.keras_model(), batches), "running_mean")
    naive_model = naive_port(a.spec, a.weights, "bn-momentum")
    naive, bite = _stat_drift(a, source, _train_forward(naive_model, batches), "running_mean")
    decay = a.spec.batchnorm.running_stats_decay
    return Measured(
        setting(a.spec, hw, f", {steps} training-mode forward passes"),
        (f"naive port (torch momentum {g(1 - decay)} typed into Keras momentum, which weights the OLD value): "
         f"running means differ by up to {g(naive)} of their scale; first at {bite}",
         f"our port (running_stats_decay={decay} -> torch momentum {g(1 - decay)}, Keras momentum {decay}): "
         f"up to {g(good)}",
         "inference from the same statistics is unaffected: the mistake shows only after training"),
        {"naive_rel": naive, "ours_rel": good, "naive_bite": bite},
        bite,
    )


def bn_variance(preset: ResNetSpec | str = "resnet18", hw: int = 64) -> Measured:
    """Trap 8: unbiased (PyTorch) vs biased (Keras) batch variance in the running statistics."""
    a = anchor(preset, hw)
    batch = _batches(a, 1)
    source = _train_forward(a.torch_model(), batch)
    # Keras's own BatchNormalization is what running_var="biased" builds; the spec's default
    # "unbiased" builds resnet_keras.layers.UnbiasedBatchNormalization instead.
    keras_default = _train_forward(a.keras_model(a.spec.replace(batchnorm={"running_var": "biased"})), batch)
    ours = _train_forward(a.keras_model(), batch)
    decay = a.spec.batchnorm.running_stats_decay
    pixels = {row.name: BATCH * row.output_shape[1] * row.output_shape[2]
              for row in layer_table(a.spec, (hw, hw)) if row.kind == "BatchNorm"}

    def batch_var(w: dict[str, np.ndarray], name: str) -> np.ndarray:  # undo the running average
        return (w[f"{name}.running_var"] - decay * a.weights[f"{name}.running_var"]) / (1 - decay)

    names = _bn_names(a)
    first, last = names[0], names[-1]
    ratio = {n: float(np.median(batch_var(source, n) / batch_var(keras_default, n))) for n in (first, last)}
    worst, bite = _stat_drift(a, source, keras_default, "running_var")
    good, _ = _stat_drift(a, source, ours, "running_var")
    mean_drift, _ = _stat_drift(a, source, keras_default, "running_mean")
    return Measured(
        setting(a.spec, hw, ", one training-mode forward pass"),
        tuple(f"{n}: batch variance PyTorch / Keras BatchNormalization = {ratio[n]:.6g} over n = {pixels[n]} values "
              f"per channel (n / (n - 1) = {pixels[n] / (pixels[n] - 1):.6g})" for n in (first, last))
        + (f"with Keras's own BatchNormalization running variances differ by up to {g(worst)} of their scale after "
           f"one step (running means: {g(mean_drift)})",
           f"with the spec's running_var='unbiased' (UnbiasedBatchNormalization): up to {g(good)}",
           "PyTorch stores the unbiased batch variance, Keras the biased one, on every backend"),
        {"ratio_first": ratio[first], "ratio_last": ratio[last], "n_first": pixels[first], "n_last": pixels[last],
         "var_rel": worst, "ours_var_rel": good, "mean_rel": mean_drift, "first_bn": first, "last_bn": last},
        bite,
    )


def frozen_bn(preset: ResNetSpec | str = "cifar_resnet20", hw: int = 32) -> Measured:
    """Trap 9: what 'frozen' means for BatchNorm statistics in each framework."""
    torch, keras = import_frameworks()
    import resnet_keras as rk

    a = anchor(preset, hw)
    batch = _batches(a, 1)

    def drift(after: dict[str, np.ndarray]) -> float:
        return max(float(np.abs(after[k] - a.weights[k]).max()) for k in a.weights if k.endswith("running_mean"))

    no_grad = a.torch_model()
    for p in no_grad.parameters():
        p.requires_grad_(False)
    torch_no_grad = drift(_train_forward(no_grad, batch))
    evaluated = a.torch_model()
    with torch.no_grad():
        evaluated(torch.from_numpy(batch[0]))
    import resnet_torch as rt

    torch_eval = drift(rt.export_weights(evaluated))
    frozen = a.keras_model()
    frozen.trainable = False
    x = np.ascontiguousarray(batch[0].transpose(0, 2, 3, 1))
    inference = keras.ops.convert_to_numpy(frozen(x, training=False))
    trained = keras.ops.convert_to_numpy(frozen(x, training=True))
    keras_frozen = drift(rk.export_weights(frozen))
    keras_training = drift(_train_forward(a.keras_model(), batch))
    out_gap = float(np.abs(trained - inference).max())
    return Measured(
        setting(a.spec, hw, ", one forward pass per case"),
        (f"PyTorch, requires_grad=False on every parameter, model.train(): running means move by up to "
         f"{g(torch_no_grad)}",
         f"PyTorch, model.eval(): they move by {g(torch_eval)}",
         f"Keras, model.trainable=False, called with training=True: they move by {g(keras_frozen)}, and the output "
         f"differs from inference mode by {g(out_gap)} (a frozen Keras BN runs in inference mode)",
         f"Keras, trainable model called with training=True: they move by up to {g(keras_training)}"),
        {"torch_requires_grad_false": torch_no_grad, "torch_eval": torch_eval, "keras_frozen": keras_frozen,
         "keras_frozen_output_gap": out_gap, "keras_training": keras_training},
    )


def _gradients(a: Anchor, steps: int) -> tuple[list[str], list[list[np.ndarray]]]:
    """Gradients of a cross-entropy loss of the PyTorch model at its initial weights, one
    random batch per step: the same sequence is fed to both optimizers."""
    torch, _ = import_frameworks()
    model = a.torch_model().train()
    names = [name for name, _, trainable in make_plan(a.spec).tensors() if trainable]
    params = dict(model.named_parameters())
    rng = np.random.default_rng(11)
    grads = []
    for x in _batches(a, steps):
        model.zero_grad()
        labels = torch.from_numpy(rng.integers(0, a.spec.num_classes or 1, BATCH))
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), labels).backward()
        grads.append([params[n].grad.numpy().copy() for n in names])
    return names, grads


def _run_optimizers(a: Anchor, names: list[str], grads: list[list[np.ndarray]], lrs: list[float],
                    weight_decay: float, l2_in_gradient: bool = False) -> list[float]:
    """Feed the same gradients to torch.optim.SGD and keras.optimizers.SGD (momentum 0.9);
    after each step, the largest parameter difference relative to the largest update so far."""
    torch, keras = import_frameworks()
    start = [a.weights[n] for n in names]
    tparams = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in start]
    topt = torch.optim.SGD(tparams, lr=lrs[0], momentum=0.9, weight_decay=weight_decay)
    kvars = [keras.Variable(w.copy()) for w in start]
    kopt = keras.optimizers.SGD(learning_rate=lrs[0], momentum=0.9,
                                weight_decay=None if l2_in_gradient or not weight_decay else weight_decay)
    gaps = []
    for lr, step_grads in zip(lrs, grads, strict=True):
        for group in topt.param_groups:
            group["lr"] = lr
        kopt.learning_rate = lr
        kgrads = []
        for p, v, gr in zip(tparams, kvars, step_grads, strict=True):
            p.grad = torch.from_numpy(gr.copy())
            kg = gr + weight_decay * keras.ops.convert_to_numpy(v) if l2_in_gradient else gr
            kgrads.append(keras.ops.convert_to_tensor(kg))
        topt.step()
        kopt.apply_gradients(zip(kgrads, kvars))
        moved = max(float(np.abs(p.detach().numpy() - w).max()) for p, w in zip(tparams, start))
        gap = max(float(np.abs(p.detach().numpy() - keras.ops.convert_to_numpy(v)).max())
                  for p, v in zip(tparams, kvars))
        gaps.append(gap / moved)
    return gaps


def sgd_semantics(preset: ResNetSpec | str = "cifar_resnet20", hw: int = 32, steps: int = 5) -> Measured:
    """Trap 10: torch.optim.SGD and keras.optimizers.SGD fed the same gradients."""
    a = anchor(preset, hw)
    names, grads = _gradients(a, steps)
    wd = 5e-4
    decoupled = _run_optimizers(a, names, grads, [0.1] * steps, wd)
    l2 = _run_optimizers(a, names, grads, [0.1] * steps, wd, l2_in_gradient=True)
    schedule = [0.1, 0.1] + [0.01] * (steps - 2)
    dropped = _run_optimizers(a, names, grads, schedule, 0.0)
    return Measured(
        setting(a.spec, hw, f", {steps} SGD steps (momentum 0.9) fed identical gradients"),
        (f"weight_decay={wd} in both optimizers: after step 1 the parameters differ by {g(decoupled[0])} of the "
         f"distance moved, after step {steps} by {g(decoupled[-1])} (Keras decouples the decay; torch adds it "
         "to the gradient, where momentum accumulates it)",
         f"weight decay added to the gradient on the Keras side too (L2): {g(l2[-1])} after step {steps}",
         f"no decay, lr 0.1 then 0.01 from step 3: {g(dropped[1])} after step 2, {g(dropped[-1])} after step {steps} "
         "(Keras's momentum buffer holds lr * gradient, torch's the bare gradient)"),
        {"decoupled": decoupled, "l2": l2, "lr_drop": dropped},
    )


def hyperparameter_precision(preset: ResNetSpec | str = "cifar_resnet20", hw: int = 32) -> Measured:
    """Trap 11: the learning rate as Keras stores it, and one float64 step."""
    torch, keras = import_frameworks()
    a = anchor(preset, hw)
    names, grads = _gradients(a, 1)
    lr = 0.1
    opt = keras.optimizers.SGD(learning_rate=lr)
    stored = float(keras.ops.convert_to_numpy(opt.learning_rate))
    w = a.weights[names[-2]].astype(np.float64)  # the classifier matrix
    gr = grads[0][-2].astype(np.float64)
    variable = keras.Variable(w.copy(), dtype="float64")
    opt.apply_gradients([(keras.ops.convert_to_tensor(gr, dtype=variable.dtype), variable)])
    keras_step = keras.ops.convert_to_numpy(variable).astype(np.float64) - w
    torch_param = torch.nn.Parameter(torch.from_numpy(w.copy()))
    torch_param.grad = torch.from_numpy(gr.copy())
    torch.optim.SGD([torch_param], lr=lr).step()
    torch_step = torch_param.detach().numpy() - w
    step_rel = float(np.abs(keras_step - torch_step).max() / np.abs(torch_step).max())
    return Measured(
        setting(a.spec, hw, f", one SGD step on {names[-2]} in float64"),
        (f"keras.optimizers.SGD(learning_rate={lr}) stores {stored!r}: {g(abs(stored - lr) / lr)} off "
         f"(a float32 variable; torch keeps the Python float)",
         f"one float64 step: the updates differ by {g(step_rel)} of their size "
         f"(Keras variable dtype here: {variable.dtype})"),
        {"stored_lr": stored, "lr_rel": abs(stored - lr) / lr, "step_rel": step_rel, "dtype": str(variable.dtype)},
    )


def default_init(preset: ResNetSpec | str = "resnet18", layer: str = "layer1.0.conv2") -> Measured:
    """Trap 12: default and our initialisations of one conv, and what a shared seed gives."""
    torch, keras = import_frameworks()
    import resnet_keras as rk
    import resnet_torch as rt

    spec = resolve_spec(preset)
    op = next(o for o in make_plan(spec).ops() if o.name == layer)
    fan_out = op.out_channels * op.kernel_size**2
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    plain_torch = torch.nn.Conv2d(op.in_channels, op.out_channels, op.kernel_size, bias=False).weight.detach().numpy()
    plain_keras = keras.layers.Conv2D(op.out_channels, op.kernel_size, use_bias=False)
    plain_keras.build((None, None, None, op.in_channels))
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    ours_torch = rt.export_weights(rt.build(spec))[f"{layer}.weight"]
    ours_keras = rk.export_weights(rk.build(spec))[f"{layer}.weight"]
    stds = {"torch_default": float(plain_torch.std()),
            "keras_default": float(keras.ops.convert_to_numpy(plain_keras.kernel).std()),
            "ours_torch": float(ours_torch.std()), "ours_keras": float(ours_keras.std()),
            "he_fan_out": float(np.sqrt(2 / fan_out))}
    same_seed = float(np.abs(ours_torch - ours_keras).max())
    return Measured(
        f"{spec.name}'s {layer} ({op.in_channels}->{op.out_channels}, {op.kernel_size}x{op.kernel_size}), Keras on "
        f"{keras.backend.backend()}",
        (f"weight std: nn.Conv2d default (kaiming_uniform, a=sqrt(5)) {stds['torch_default']:.4f}; keras Conv2D "
         f"default (glorot_uniform) {stds['keras_default']:.4f}",
         f"our builders (He normal, fan_out, as torchvision): PyTorch {stds['ours_torch']:.4f}, Keras "
         f"{stds['ours_keras']:.4f}; sqrt(2 / fan_out) = {stds['he_fan_out']:.4f}",
         f"the same seed (torch.manual_seed(0), keras.utils.set_random_seed(0)) still gives different weights: "
         f"max |diff| {g(same_seed)}; same distribution, different draws"),
        {**stds, "same_seed_diff": same_seed},
    )


def cross_entropy(preset: ResNetSpec | str = "cifar_resnet20", hw: int = 32) -> Measured:
    """Trap 13: Keras's default cross-entropy applied to logits."""
    torch, keras = import_frameworks()
    a = anchor(preset, hw)
    with torch.no_grad():
        logits = a.torch_model()(torch.from_numpy(a.x))
    labels = np.random.default_rng(3).integers(0, a.spec.num_classes, BATCH)
    reference = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)))
    z = logits.numpy()

    def keras_loss(**kw: Any) -> float:
        return float(keras.ops.convert_to_numpy(keras.losses.SparseCategoricalCrossentropy(**kw)(labels, z)))

    default, from_logits = keras_loss(), keras_loss(from_logits=True)
    return Measured(
        setting(a.spec, hw, f", logits of the model, {BATCH} random labels"),
        (f"torch.nn.functional.cross_entropy(logits): {reference:.6g}",
         f"keras SparseCategoricalCrossentropy() on the same logits (from_logits=False by default): {default:.6g}",
         f"with from_logits=True: {from_logits:.6g}"),
        {"torch": reference, "keras_default": default, "keras_from_logits": from_logits},
    )
