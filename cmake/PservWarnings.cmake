# Warnings for every pserv target: pserv_set_warnings(<target>).
add_library(pserv_warnings INTERFACE)
target_compile_options(pserv_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:C>:-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
                          -Wpointer-arith -Wformat=2 -Wvla -Wno-unused-parameter>)
if(PSERV_WERROR)
  target_compile_options(pserv_warnings INTERFACE $<$<COMPILE_LANGUAGE:C>:-Werror>
                                                  $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings>)
endif()
if(PSERV_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
if(PSERV_TSAN)
  if(PSERV_SANITIZE)
    message(FATAL_ERROR "PSERV_TSAN and PSERV_SANITIZE cannot be combined: TSan and ASan are exclusive")
  endif()
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -g)
  # An instrumented ifunc resolver (the optimizer's target_clones) runs during relocation,
  # before TSan is initialized, and crashes: build the kernels for the baseline ISA only.
  add_compile_definitions(PSERV_NO_TARGET_CLONES)
  add_link_options(-fsanitize=thread)
endif()
