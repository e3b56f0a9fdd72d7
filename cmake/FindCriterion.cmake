# Finds Criterion (the test runner) and defines Criterion::criterion.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_CRITERION QUIET criterion)
endif()
find_path(CRITERION_INCLUDE_DIR criterion/criterion.h HINTS ${PC_CRITERION_INCLUDE_DIRS})
find_library(CRITERION_LIBRARY criterion HINTS ${PC_CRITERION_LIBRARY_DIRS})
set(Criterion_VERSION ${PC_CRITERION_VERSION})
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Criterion REQUIRED_VARS CRITERION_LIBRARY CRITERION_INCLUDE_DIR
                                  VERSION_VAR Criterion_VERSION)
if(Criterion_FOUND AND NOT TARGET Criterion::criterion)
  add_library(Criterion::criterion INTERFACE IMPORTED)
  set_target_properties(Criterion::criterion PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CRITERION_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${CRITERION_LIBRARY}")
endif()
mark_as_advanced(CRITERION_INCLUDE_DIR CRITERION_LIBRARY)
