# Finds NCCL's header (in the CUDA toolkit or the system) and defines NCCL::nccl, header only.
# pserv does not link NCCL: cuda/nccl_loader.cu dlopens libnccl.so.2 at run time and builds
# without nccl.h too (it checks its declarations against the header when one is found on the
# compiler's include path). This module is for tools that want the header's location.
find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(NCCL REQUIRED_VARS NCCL_INCLUDE_DIR)
if(NCCL_FOUND AND NOT TARGET NCCL::nccl)
  add_library(NCCL::nccl INTERFACE IMPORTED)
  set_target_properties(NCCL::nccl PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
endif()
mark_as_advanced(NCCL_INCLUDE_DIR)
