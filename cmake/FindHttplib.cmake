# Finds cpp-httplib as Debian ships it (header plus a compiled libcpp-httplib).
#   Httplib_FOUND and target httplib::httplib.
find_path(Httplib_INCLUDE_DIR httplib.h)
find_library(Httplib_LIBRARY NAMES cpp-httplib)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Httplib REQUIRED_VARS Httplib_INCLUDE_DIR)
if(Httplib_FOUND AND NOT TARGET httplib::httplib)
  add_library(httplib::httplib INTERFACE IMPORTED)
  set_target_properties(httplib::httplib PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${Httplib_INCLUDE_DIR}")
  if(Httplib_LIBRARY)
    set_property(TARGET httplib::httplib PROPERTY
      INTERFACE_LINK_LIBRARIES "${Httplib_LIBRARY}")
    set_property(TARGET httplib::httplib APPEND PROPERTY
      INTERFACE_COMPILE_DEFINITIONS CPPHTTPLIB_OPENSSL_SUPPORT CPPHTTPLIB_ZLIB_SUPPORT CPPHTTPLIB_BROTLI_SUPPORT)
  endif()
endif()
mark_as_advanced(Httplib_INCLUDE_DIR Httplib_LIBRARY)
