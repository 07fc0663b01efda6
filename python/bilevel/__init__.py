"""Bilevel from Python: the C interface (include/bilevel/bilevel.h) through ctypes, with petsc4py Vecs.

    import petsc4py, sys; petsc4py.init(sys.argv)
    from petsc4py import PETSc
    import bilevel

    solver = bilevel.Solver()                      # on PETSc.COMM_WORLD
    solver.set_problem(dim_upper, dim_lower, upper_grad=..., lower_grad_y=..., lower_hvp=..., lower_jvp=...)
    solver.set_from_options()                      # -bilevel_type, -bilevel_max_it, ... (sys.argv, PETSC_OPTIONS)
    solver.solve()
    x, y = solver.solution

Callbacks are Python callables on petsc4py Vecs, collective on the communicator (docs/user-problem.md):

    upper_grad(x, y, batch, gx, gy)   # ∇_x f into gx, ∇_y f into gy; either may be None (not wanted)
    lower_grad_y(x, y, batch, gy)     # ∇_y g
    lower_hvp(x, y, batch, w, out)    # H w,  H = ∇²_yy g
    lower_jvp(x, y, batch, w, out)    # J w = ∇_x <∇_y g, w>
    upper_value(x, y, batch) -> float # f (optional), also lower_value (optional), lower_grad_x(x, y, batch, gx)

`batch` is None for the whole data set, else a tuple of sorted global sample indices (problems with
dataset_sizes; minibatch methods). An exception in a callback ends the solve and is raised again by solve();
an error of the library is a bilevel.Error (a petsc4py PETSc.Error) carrying the library's message.
"""
import ctypes
import os

import numpy

from petsc4py import PETSc

from . import _config

__all__ = ["Solver", "ConvergedReason", "Error", "library"]

_here = os.path.dirname(os.path.abspath(__file__))
_path = _config.LIBRARY if os.path.isabs(_config.LIBRARY) else os.path.normpath(os.path.join(_here, _config.LIBRARY))
library = ctypes.CDLL(_path, mode=ctypes.RTLD_GLOBAL)
"""The loaded libbilevel (its C interface)."""

_Err = ctypes.c_int
_Vec = ctypes.c_void_p
_Real = ctypes.c_double if numpy.dtype(PETSc.RealType).itemsize == 8 else ctypes.c_float
_Int = ctypes.c_int64 if numpy.dtype(PETSc.IntType).itemsize == 8 else ctypes.c_int32  # 32-bit in Debian's PETSc


class _Batch(ctypes.Structure):
    _fields_ = [("full", ctypes.c_int), ("n", _Int), ("indices", ctypes.POINTER(_Int))]


_BatchP = ctypes.POINTER(_Batch)
_UpperGrad = ctypes.CFUNCTYPE(_Err, _Vec, _Vec, _BatchP, _Vec, _Vec, ctypes.c_void_p)
_GradOne = ctypes.CFUNCTYPE(_Err, _Vec, _Vec, _BatchP, _Vec, ctypes.c_void_p)
_Product = ctypes.CFUNCTYPE(_Err, _Vec, _Vec, _BatchP, _Vec, _Vec, ctypes.c_void_p)
_Value = ctypes.CFUNCTYPE(_Err, _Vec, _Vec, _BatchP, ctypes.POINTER(_Real), ctypes.c_void_p)
_Monitor = ctypes.CFUNCTYPE(_Err, ctypes.c_void_p, _Int, _Real, _Real, ctypes.c_void_p)


class _Callbacks(ctypes.Structure):
    _fields_ = [("upper_grad", _UpperGrad), ("lower_grad_y", _GradOne), ("lower_hvp", _Product),
                ("lower_jvp", _Product), ("upper_value", _Value), ("lower_value", _Value),
                ("lower_grad_x", _GradOne)]


def _declare(name, *args):
    f = getattr(library, name)
    f.restype = _Err
    f.argtypes = list(args)
    return f


_P = ctypes.c_void_p
_create = _declare("BilevelCreate", _P, ctypes.POINTER(_P))
_destroy = _declare("BilevelDestroy", ctypes.POINTER(_P))
_set_prefix = _declare("BilevelSetOptionsPrefix", _P, ctypes.c_char_p)
_append_prefix = _declare("BilevelAppendOptionsPrefix", _P, ctypes.c_char_p)
_set_type = _declare("BilevelSetType", _P, ctypes.c_char_p)
_get_type = _declare("BilevelGetType", _P, ctypes.POINTER(ctypes.c_char_p))
_set_callbacks = _declare("BilevelSetProblemCallbacks", _P, _Int, _Int, ctypes.POINTER(_Callbacks), _P)
_set_sizes = _declare("BilevelSetDatasetSizes", _P, _Int, _Int)
_set_hints = _declare("BilevelSetHints", _P, _Real, _Real, _Int)
_set_from_options = _declare("BilevelSetFromOptions", _P)
_solve = _declare("BilevelSolve", _P)
_get_reason = _declare("BilevelGetConvergedReason", _P, ctypes.POINTER(ctypes.c_int))
_get_solution = _declare("BilevelGetSolution", _P, ctypes.POINTER(_Vec), ctypes.POINTER(_Vec))
_get_its = _declare("BilevelGetIterationNumber", _P, ctypes.POINTER(_Int))
_get_objective = _declare("BilevelGetObjective", _P, ctypes.POINTER(_Real))
_view = _declare("BilevelView", _P, _P)
_monitor_set = _declare("BilevelMonitorSet", _P, _Monitor, _P, _P)
_monitor_cancel = _declare("BilevelMonitorCancel", _P)


def _vec_factory():
    """petsc4py's own PyPetscVec_New (its C API capsule): a petsc4py Vec sharing a C Vec (one reference)."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    name = ctypes.pythonapi.PyCapsule_GetName
    name.restype = ctypes.c_char_p
    name.argtypes = [ctypes.py_object]
    capsule = PETSc.__pyx_capi__["PyPetscVec_New"]
    return ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p)(get(capsule, name(capsule)))


_vec_new = _vec_factory()
_PETSC_ERR_USER = 83  # PETSC_ERR_USER: a Python exception in a callback


_error_message = library.PetscErrorMessage
_error_message.restype = _Err
_error_message.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p)]


class Error(PETSc.Error):
    """A PETSc error raised by the library, with its message (PetscErrorMessage's last specific message)."""

    def __init__(self, ierr):
        super().__init__(ierr)
        text, specific = ctypes.c_char_p(), ctypes.c_char_p()
        _error_message(ierr, ctypes.byref(text), ctypes.byref(specific))
        self.message = (specific.value or text.value or b"").decode(errors="replace")

    def __str__(self):
        return "error code %d: %s" % (self.ierr, self.message)


def _vec(handle):
    return _vec_new(handle) if handle else None


def _batch(p):
    b = p.contents
    return None if b.full else tuple(b.indices[i] for i in range(b.n))


def _mpi_handle(comm):
    from mpi4py import MPI
    if comm is None:
        comm = MPI.COMM_WORLD
    elif isinstance(comm, PETSc.Comm):
        comm = comm.tompi4py()
    return MPI._handleof(comm)


class ConvergedReason:
    """Values of BilevelConvergedReason: > 0 converged, < 0 diverged."""
    ITERATING = 0
    CONVERGED_GATOL = 2
    CONVERGED_MAX_TIME = 3
    CONVERGED_MAX_IT = 4
    DIVERGED_NAN = -1
    DIVERGED_INNER_SOLVE = -2
    DIVERGED_USER = -3
    names = {0: "ITERATING", 2: "CONVERGED_GATOL", 3: "CONVERGED_MAX_TIME", 4: "CONVERGED_MAX_IT", -1: "DIVERGED_NAN",
             -2: "DIVERGED_INNER_SOLVE", -3: "DIVERGED_USER"}


class Solver:
    """A Bilevel solver (the C object Bilevel). Collective on its communicator, like every method."""

    def __init__(self, comm=None):
        self._obj = _P()
        self._keep = []          # ctypes callbacks must outlive the solver
        self._error = None       # the first exception a callback raised
        self._check(_create(_P(_mpi_handle(comm)), ctypes.byref(self._obj)))

    def _check(self, code):
        if code:
            error, self._error = self._error, None
            if error is not None:
                raise error
            raise Error(code)

    def _guard(self, fn):
        """Runs a Python callable inside a C callback: an exception becomes PETSC_ERR_USER, kept for later."""
        def call(*args):
            try:
                fn(*args)
                return 0
            except BaseException as e:  # noqa: B902 - nothing may cross the C frames
                if self._error is None:
                    self._error = e
                return _PETSC_ERR_USER
        return call

    def destroy(self):
        if self._obj:
            self._check(_destroy(ctypes.byref(self._obj)))
        self._keep = []

    def __del__(self):
        try:
            if self._obj and PETSc.Sys.isInitialized() and not PETSc.Sys.isFinalized():
                _destroy(ctypes.byref(self._obj))
        except Exception:
            pass

    def set_options_prefix(self, prefix):
        self._check(_set_prefix(self._obj, prefix.encode()))

    def append_options_prefix(self, prefix):
        self._check(_append_prefix(self._obj, prefix.encode()))

    def set_type(self, method):
        self._check(_set_type(self._obj, method.encode()))

    def get_type(self):
        t = ctypes.c_char_p()
        self._check(_get_type(self._obj, ctypes.byref(t)))
        return t.value.decode()

    def set_problem(self, dim_upper, dim_lower, upper_grad, lower_grad_y, lower_hvp, lower_jvp,
                    upper_value=None, lower_value=None, lower_grad_x=None):
        """The problem's oracles (see the module's documentation); x has dim_upper entries, y dim_lower."""
        def grad2(f):
            return _UpperGrad(self._guard(lambda x, y, b, gx, gy, _: f(_vec(x), _vec(y), _batch(b), _vec(gx), _vec(gy))))

        def grad1(f):
            return _GradOne(self._guard(lambda x, y, b, g, _: f(_vec(x), _vec(y), _batch(b), _vec(g))))

        def product(f):
            return _Product(self._guard(lambda x, y, b, w, o, _: f(_vec(x), _vec(y), _batch(b), _vec(w), _vec(o))))

        def value(f):
            def store(x, y, b, out, _):
                out[0] = float(f(_vec(x), _vec(y), _batch(b)))
            return _Value(self._guard(store))

        cb = _Callbacks()
        cb.upper_grad = grad2(upper_grad)
        cb.lower_grad_y = grad1(lower_grad_y)
        cb.lower_hvp = product(lower_hvp)
        cb.lower_jvp = product(lower_jvp)
        if upper_value is not None:
            cb.upper_value = value(upper_value)
        if lower_value is not None:
            cb.lower_value = value(lower_value)
        if lower_grad_x is not None:
            cb.lower_grad_x = grad1(lower_grad_x)
        self._keep.append(cb)
        self._check(_set_callbacks(self._obj, dim_upper, dim_lower, ctypes.byref(cb), None))

    def set_dataset_sizes(self, lower, upper=0):
        """Samples behind g and f: minibatch methods then pass batches of their indices to the callbacks."""
        self._check(_set_sizes(self._obj, lower, upper))

    def set_hints(self, lower_lipschitz=0.0, upper_step=0.0, max_it=0):
        """Lipschitz constant of ∇_y g, upper step size, default of -bilevel_max_it (each ignored when <= 0)."""
        self._check(_set_hints(self._obj, lower_lipschitz, upper_step, max_it))

    def set_from_options(self):
        self._check(_set_from_options(self._obj))

    def monitor_set(self, monitor):
        """monitor(iteration, upper_objective, hypergradient_norm) at the start point (iteration 0) and after every monitored iteration."""
        fn = _Monitor(self._guard(lambda _b, it, f, h, _c: monitor(it, f, h)))
        self._keep.append(fn)
        self._check(_monitor_set(self._obj, fn, None, None))

    def monitor_cancel(self):
        self._check(_monitor_cancel(self._obj))

    def solve(self):
        self._error = None
        self._check(_solve(self._obj))

    @property
    def converged_reason(self):
        r = ctypes.c_int()
        self._check(_get_reason(self._obj, ctypes.byref(r)))
        return r.value

    @property
    def iterations(self):
        n = _Int()
        self._check(_get_its(self._obj, ctypes.byref(n)))
        return n.value

    @property
    def objective(self):
        """The upper objective at the end of the last solve (nan without upper_value)."""
        f = _Real()
        self._check(_get_objective(self._obj, ctypes.byref(f)))
        return f.value

    @property
    def solution(self):
        """(x, y) as petsc4py Vecs sharing the solver's iterates: set them before solve() to start elsewhere."""
        x, y = _Vec(), _Vec()
        self._check(_get_solution(self._obj, ctypes.byref(x), ctypes.byref(y)))
        return _vec(x.value), _vec(y.value)

    def view(self, viewer=None):
        self._check(_view(self._obj, _P(viewer.handle) if viewer is not None else None))
