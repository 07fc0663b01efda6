# bilevel_add_test(NAME <name> SOURCES <files...> [RANKS <n>...] [TIMEOUT s])  ->  CTest cases <name>.np<n>
set(BILEVEL_TEST_MAX_RANKS 3 CACHE STRING "Largest rank count a test may ask for")
set(BILEVEL_MPIEXEC_PREFLAGS ${MPIEXEC_PREFLAGS})
execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE _mpiexec_version ERROR_QUIET)
if(_mpiexec_version MATCHES "Open MPI|OpenRTE")
  list(APPEND BILEVEL_MPIEXEC_PREFLAGS --oversubscribe)
endif()
set(BILEVEL_TEST_ENV
    "PETSC_OPTIONS=-malloc_debug -malloc_dump"
    "OMPI_ALLOW_RUN_AS_ROOT=1" "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1" "OMPI_MCA_rmaps_base_oversubscribe=1"
    "OPENBLAS_NUM_THREADS=1" "GTEST_COLOR=no")

function(bilevel_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;RANKS" ${ARGN})
  if(NOT T_RANKS)
    set(T_RANKS 1)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE bilevel::bilevel bilevel_test_main)
  foreach(n IN LISTS T_RANKS)
    if(n GREATER BILEVEL_TEST_MAX_RANKS)
      continue()
    endif()
    add_test(NAME ${T_NAME}.np${n}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${n} ${BILEVEL_MPIEXEC_PREFLAGS}
                     $<TARGET_FILE:${T_NAME}> ${MPIEXEC_POSTFLAGS})
    set_tests_properties(${T_NAME}.np${n} PROPERTIES
      PROCESSORS ${n} TIMEOUT ${T_TIMEOUT} LABELS "mpi;np${n}"
      ENVIRONMENT "${BILEVEL_TEST_ENV}"
      # -malloc_dump lists every PETSc object not destroyed by PetscFinalize (exit code unchanged).
      FAIL_REGULAR_EXPRESSION "\\[ *[0-9]+\\] *[0-9]+ bytes [A-Za-z_0-9]+\\(\\) at")
  endforeach()
endfunction()
