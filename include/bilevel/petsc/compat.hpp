#pragma once
/// \file Version shims for the PETSc/SLEPc 3.18 API (Debian 12). One place for every difference.
#include <petscsys.h>

#if PETSC_VERSION_LT(3, 19, 0)
#ifndef PETSC_SUCCESS
#define PETSC_SUCCESS 0
#endif
#endif
