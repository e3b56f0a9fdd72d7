# Finds Intel's ISA-L (libisal-dev), whose crc32_iscsi is pserv's CRC32C, and defines ISAL::isal.
find_path(ISAL_INCLUDE_DIR isa-l/crc.h)
find_library(ISAL_LIBRARY isal)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(ISAL REQUIRED_VARS ISAL_LIBRARY ISAL_INCLUDE_DIR)
if(ISAL_FOUND AND NOT TARGET ISAL::isal)
  add_library(ISAL::isal INTERFACE IMPORTED)
  set_target_properties(ISAL::isal PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${ISAL_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${ISAL_LIBRARY}")
endif()
mark_as_advanced(ISAL_INCLUDE_DIR ISAL_LIBRARY)
