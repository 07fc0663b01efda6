# Where the installed files find each other, as paths relative to the installed program, so that the
# installed tree can be moved (cmake --install build --prefix P, then mv P Q): included before any target.
#
#   BILEVEL_BIN_TO_LIB   bin -> lib     (RPATH of the installed programs: $ORIGIN/../lib)
#   BILEVEL_BIN_TO_DATA  bin -> share/bilevel
#   BILEVEL_PC_TO_PREFIX lib/pkgconfig -> prefix (bilevel.pc's prefix=${pcfiledir}/..)
file(RELATIVE_PATH BILEVEL_BIN_TO_LIB ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_LIBDIR})
file(RELATIVE_PATH BILEVEL_BIN_TO_DATA ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_DATADIR}/bilevel)
file(RELATIVE_PATH BILEVEL_PC_TO_PREFIX ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" BILEVEL_PC_TO_PREFIX "${BILEVEL_PC_TO_PREFIX}")

# Installed programs find libbilevel.so next to them ($ORIGIN/../lib) and PETSc/SLEPc/MPI where they were
# linked from when those are outside the system's search path (a PETSC_DIR build). A user's setting wins.
if(NOT DEFINED CMAKE_INSTALL_RPATH)
  set(CMAKE_INSTALL_RPATH "$ORIGIN/${BILEVEL_BIN_TO_LIB}")
endif()
if(NOT DEFINED CMAKE_INSTALL_RPATH_USE_LINK_PATH)
  set(CMAKE_INSTALL_RPATH_USE_LINK_PATH ON)
endif()
