# `cmake --install BUILD --prefix P` installs what inference engines link: libkvtier.so (with
# its SONAME link), include/kvtier/*.h, a CMake package (find_package(kvtier) ->
# kvtier::kvtier, with a version file) and kvtier.pc for pkg-config.
# scripts/check-install.sh builds consumers against such a prefix.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(KVTIER_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/kvtier")

install(TARGETS kvtier_shared EXPORT kvtierTargets
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/kvtier" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
  FILES_MATCHING PATTERN "*.h")
install(EXPORT kvtierTargets NAMESPACE kvtier:: DESTINATION "${KVTIER_INSTALL_CMAKEDIR}")

configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/kvtierConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/kvtierConfig.cmake" INSTALL_DESTINATION "${KVTIER_INSTALL_CMAKEDIR}")
# 0.x: minor versions may change the ABI (the SONAME is libkvtier.so.MAJOR.MINOR).
write_basic_package_version_file("${PROJECT_BINARY_DIR}/kvtierConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}" COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/kvtierConfig.cmake"
  "${PROJECT_BINARY_DIR}/kvtierConfigVersion.cmake" DESTINATION "${KVTIER_INSTALL_CMAKEDIR}")

file(RELATIVE_PATH KVTIER_PC_TO_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
configure_file("${PROJECT_SOURCE_DIR}/cmake/kvtier.pc.in" "${PROJECT_BINARY_DIR}/kvtier.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/kvtier.pc" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
