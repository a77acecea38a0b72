"""`mlbh demo`: trace a small MLP, differentiate it, optimize the gradient graph, and check
the gradient against finite differences. It shows the stages that are built today."""
import os
import sys

import click
import numpy as np

from . import demo_model
from .gradient_check import finite_difference_grads, relative_error


def heading(text: str) -> None:
    click.echo(f"\n== {text} ==")


def _as_float64(params: dict) -> dict:
    return {name: value.astype(np.float64) for name, value in params.items()}


@click.command()
@click.option("--seed", default=0, show_default=True, help="Seed of the weights and the batch.")
@click.option("--tolerance", default=1e-6, show_default=True,
              help="Largest relative gradient error that passes.")
@click.option("--save", "save_dir", metavar="DIR", default=None,
              help="Also write the two graphs as DIR/mlp_loss.json and DIR/mlp_grad.json.")
def demo(seed, tolerance, save_dir):
    """Trace, differentiate and optimize a 2-layer MLP; check its gradient. Exit 1 on FAIL."""
    import mlbh.tracer as T

    rng = np.random.default_rng(seed)
    params = demo_model.init_params(rng)
    x, labels = demo_model.example_batch(rng)
    click.echo(f"mlbh demo: 2-layer MLP ({demo_model.IN_FEATURES} -> {demo_model.HIDDEN} tanh -> "
               f"{demo_model.CLASSES}), cross-entropy loss, batch {demo_model.BATCH}, seed {seed}")
    click.echo("stages: trace -> autodiff -> passes (fusion and codegen are not in the CLI yet)")

    loss_graph = T.trace(demo_model.mlp_loss, params, x, labels)
    heading(f"1. trace: the loss as a graph ({len(loss_graph.eqns)} eqns)")
    click.echo(str(loss_graph))

    raw_grad_graph = T.trace(T.value_and_grad(demo_model.mlp_loss), params, x, labels)
    grad_graph = T.optimize(raw_grad_graph)
    heading(f"2. autodiff + passes: value_and_grad(loss) after optimize "
            f"({len(raw_grad_graph.eqns)} -> {len(grad_graph.eqns)} eqns)")
    click.echo(str(grad_graph))

    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        T.save(loss_graph, os.path.join(save_dir, "mlp_loss.json"))
        T.save(grad_graph, os.path.join(save_dir, "mlp_grad.json"))
        click.echo(f"\nsaved {save_dir}/mlp_loss.json and {save_dir}/mlp_grad.json "
                   f"(try: mlbh ir stats {save_dir}/mlp_grad.json)")

    heading("3. gradient check: reverse mode vs central finite differences, float64")
    worst = check_gradients(loss_graph, grad_graph, params, x, labels)
    passed = worst <= tolerance
    click.echo(f"max relative error: {worst:.3e} (tolerance {tolerance:.0e})")
    click.echo("PASS" if passed else "FAIL")
    if not passed:
        sys.exit(1)


def check_gradients(loss_graph, grad_graph, params, x, labels) -> float:
    """Print the relative error of each parameter's gradient; return the largest."""
    import mlbh.tracer as T
    params64 = _as_float64(params)
    loss, grads = T.evaluate(grad_graph, params64, x, labels, float64=True)
    numeric = finite_difference_grads(
        lambda p: float(T.evaluate(loss_graph, p, x, labels, float64=True)), params64)
    click.echo(f"loss: {float(loss):.6f}")
    worst = 0.0
    for name in sorted(params):
        error = relative_error(grads[name], numeric[name])
        worst = max(worst, error)
        click.echo(f"  d loss/d {name:<3} {str(list(params[name].shape)):<8} relative error {error:.3e}")
    return worst
