# Installs libpserv, its public headers and an exported package: find_package(pserv) then
# target_link_libraries(app PRIVATE pserv::pserv).
include(CMakePackageConfigHelpers)
install(TARGETS pserv EXPORT pservTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/pserv DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")
install(EXPORT pservTargets NAMESPACE pserv:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/pserv)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/pservConfig.cmake.in
  ${PROJECT_BINARY_DIR}/pservConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/pserv)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/pservConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/pservConfig.cmake ${PROJECT_BINARY_DIR}/pservConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/pserv)
