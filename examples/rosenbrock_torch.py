"""The headline example in PyTorch: Rosenbrock split across a dict, bounded per key.

Run: ``python examples/rosenbrock_torch.py``
"""

import torch

from dict_minimize.torch_api import minimize  # was: from scipy.optimize import minimize


def rosen(x: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rosenbrock over the concatenation of the dict's tensors (minimum: all ones)."""
    v = torch.cat([x["head"].reshape(-1), x["tail"].reshape(-1)])
    return (100.0 * (v[1:] - v[:-1] ** 2) ** 2 + (1.0 - v[:-1]) ** 2).sum()


def main(n_head: int = 4, n_tail: int = 6, verbose: bool = True):
    x0 = {"head": torch.full((n_head,), -1.0), "tail": torch.zeros(2, n_tail // 2)}
    res = minimize(rosen, x0, method="L-BFGS-B", bounds={"tail": (-2.0, 2.0)})
    if verbose:
        print(f"success={res.success} nit={res.nit} nfev={res.nfev} fun={res.fun:.3e}")
        for key, value in res.x.items():
            print(f"  {key}: {value.dtype} {tuple(value.shape)} {value.flatten().tolist()}")
    return res


if __name__ == "__main__":
    main()
