"""A user-defined bilevel problem from Python: petsc4py Vecs and Python callables (docs/user-problem.md).

    lower:  g(x, y) = 1/2 yᵀ A y − xᵀ y,  A = diag(a), a_i = 1 + (i mod 4)   ⇒  y*(x) = A⁻¹ x
    upper:  f(x, y) = 1/2 ||y − 1||² + r/2 ||x||²,  r = 0.1                 ⇒  x*_i = a_i / (1 + r a_i²)

Run with an installed copy (docs/library.md, "Python"):

    PYTHONPATH=PREFIX/lib/python3/dist-packages mpirun -np 2 /usr/bin/python3 user_problem.py [-bilevel_type qnbo]

Exits 0 when max |x − x*| < 1e-3.
"""
import sys

import petsc4py

petsc4py.init(sys.argv)  # PETSc reads the command line's options (-bilevel_type, -bilevel_view, ...)
from petsc4py import PETSc  # noqa: E402

import bilevel  # noqa: E402

DIM, REG = 40, 0.1

a = PETSc.Vec().createMPI(DIM, comm=PETSc.COMM_WORLD)
lo, hi = a.getOwnershipRange()
a.setValues(range(lo, hi), [1.0 + i % 4 for i in range(lo, hi)])
a.assemble()


def upper_grad(x, y, batch, gx, gy):
    if gx is not None:  # ∇_x f = r x
        x.copy(gx)
        gx.scale(REG)
    if gy is not None:  # ∇_y f = y − 1
        y.copy(gy)
        gy.shift(-1.0)


def upper_value(x, y, batch):  # f = 1/2 ||y − 1||² + r/2 ||x||²
    d = y.copy()
    d.shift(-1.0)
    return 0.5 * d.norm() ** 2 + 0.5 * REG * x.norm() ** 2


def lower_grad_y(x, y, batch, gy):  # ∇_y g = A y − x
    gy.pointwiseMult(a, y)
    gy.axpy(-1.0, x)


def lower_hvp(x, y, batch, w, out):  # H w = A w
    out.pointwiseMult(a, w)


def lower_jvp(x, y, batch, w, out):  # J w = ∇_x <∇_y g, w> = −w
    w.copy(out)
    out.scale(-1.0)


solver = bilevel.Solver(PETSc.COMM_WORLD)
solver.set_problem(DIM, DIM, upper_grad=upper_grad, lower_grad_y=lower_grad_y, lower_hvp=lower_hvp,
                   lower_jvp=lower_jvp, upper_value=upper_value)
solver.set_hints(lower_lipschitz=4.0, max_it=300)  # L = max a_i; the default of -bilevel_max_it
seen = []
solver.monitor_set(lambda it, f, h: seen.append(it))
solver.set_from_options()
solver.solve()

x, y = solver.solution
xstar = x.duplicate()
xstar.setValues(range(lo, hi), [(1.0 + i % 4) / (1.0 + REG * (1.0 + i % 4) ** 2) for i in range(lo, hi)])
xstar.assemble()
xstar.axpy(-1.0, x)
err = xstar.norm(PETSc.NormType.INFINITY)
reason = solver.converged_reason
PETSc.Sys.Print("user_problem.py: %s %s after %d iterations (monitor saw %d), f = %.6f, max |x - x*| = %.3e"
                % (solver.get_type(), bilevel.ConvergedReason.names[reason], solver.iterations, len(seen),
                   solver.objective, err))
solver.destroy()
sys.exit(0 if reason > 0 and err < 1e-3 else 3)
