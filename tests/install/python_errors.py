"""The Python module's error contract: a Python exception raised in a callback ends the solve and solve()
raises it again; an error of the library is a bilevel.Error (a PETSc.Error) with the library's message.
Prints "python_errors: ok" and exits 0, else exits 1."""
import sys

import petsc4py

petsc4py.init(sys.argv)
from petsc4py import PETSc  # noqa: E402

import bilevel  # noqa: E402


def failing_grad(x, y, batch, gy):
    raise ValueError("planted in lower_grad_y")


def copy(x, y, batch, w, out):
    w.copy(out)


def upper_grad(x, y, batch, gx, gy):
    if gx is not None:
        gx.set(0.0)
    if gy is not None:
        y.copy(gy)


failures = []
s = bilevel.Solver()
s.set_problem(3, 3, upper_grad=upper_grad, lower_grad_y=failing_grad, lower_hvp=copy, lower_jvp=copy)
s.set_from_options()
try:
    s.solve()
    failures.append("solve() did not raise the callback's exception")
except ValueError as e:
    if "planted" not in str(e):
        failures.append("wrong exception: %s" % e)
try:
    s.set_type("nosuchmethod")
    failures.append("an unknown method was accepted")
except bilevel.Error as e:
    if not isinstance(e, PETSc.Error) or "nosuchmethod" not in str(e) or "aidcg" not in str(e):
        failures.append("the library's message is missing: %s" % e)
s.destroy()
for f in failures:
    PETSc.Sys.Print("python_errors: FAILED: " + f)
if not failures:
    PETSc.Sys.Print("python_errors: ok")
sys.exit(1 if failures else 0)
