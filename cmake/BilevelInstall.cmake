# Install rules: headers, libbilevel, the programs, the tuned settings, the CMake package (bilevel::bilevel)
# and bilevel.pc. Both package files are relocatable: they locate the prefix from their own folder.
include(CMakePackageConfigHelpers)
set(BILEVEL_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/bilevel)

install(TARGETS bilevel EXPORT bilevelTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/bilevel DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY cluster/tuned/ DESTINATION ${CMAKE_INSTALL_DATADIR}/bilevel/tuned FILES_MATCHING PATTERN "*.opts")

# CMake package. A static libbilevel.a also needs its private dependencies' targets in the consumer.
if(BUILD_SHARED_LIBS)
  set(BILEVEL_STATIC_DEPENDENCIES "")
else()
  set(BILEVEL_STATIC_DEPENDENCIES "ZLIB;BZip2;LibLZMA;BLAS;LAPACK")
endif()
install(EXPORT bilevelTargets NAMESPACE bilevel:: DESTINATION ${BILEVEL_CMAKE_DIR})
configure_package_config_file(cmake/bilevelConfig.cmake.in ${PROJECT_BINARY_DIR}/bilevelConfig.cmake
                              INSTALL_DESTINATION ${BILEVEL_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/bilevelConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/bilevelConfig.cmake ${PROJECT_BINARY_DIR}/bilevelConfigVersion.cmake
        DESTINATION ${BILEVEL_CMAKE_DIR})

# pkg-config. Each private dependency is a module when the system has its .pc (Requires.private), else a
# -l flag (Libs.private); MPI is the C module of the implementation PETSc was built with.
function(bilevel_pc_dependencies)
  set(requires_private)
  set(libs_private)
  foreach(pair IN ITEMS "zlib:z" "bzip2:bz2" "liblzma:lzma" "lapack:lapack" "blas:blas")
    string(REPLACE ":" ";" pair "${pair}")
    list(GET pair 0 module)
    list(GET pair 1 lib)
    pkg_check_modules(_bilevel_pc_${module} QUIET ${module})
    if(_bilevel_pc_${module}_FOUND)
      list(APPEND requires_private ${module})
    else()
      list(APPEND libs_private -l${lib})
    endif()
  endforeach()
  foreach(lib IN LISTS CMAKE_DL_LIBS)
    list(APPEND libs_private -l${lib})
  endforeach()
  set(mpi_module)
  foreach(module IN ITEMS ompi-c mpich mpi)
    pkg_check_modules(_bilevel_pc_mpi QUIET ${module})
    if(_bilevel_pc_mpi_FOUND)
      set(mpi_module ", ${module}")
      break()
    endif()
  endforeach()
  list(JOIN requires_private " " requires_private)
  list(JOIN libs_private " " libs_private)
  set(BILEVEL_PC_REQUIRES_PRIVATE "${requires_private}" PARENT_SCOPE)
  set(BILEVEL_PC_LIBS_PRIVATE "${libs_private}" PARENT_SCOPE)
  set(BILEVEL_PC_MPI "${mpi_module}" PARENT_SCOPE)
endfunction()
bilevel_pc_dependencies()
configure_file(cmake/bilevel.pc.in ${PROJECT_BINARY_DIR}/bilevel.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/bilevel.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
