# Helpers that declare one small target per module, with the project's warning
# flags, include root and link-rule checks.
#
#   plexus_cc_library(NAME <name> [SRCS ...] [DEPS ...] [PUBLIC_INCLUDE <dir>]
#                     [FORBID ...])
#     Declares library target plexus_<name> (alias plexus::<name>). Without SRCS
#     it is an INTERFACE library. FORBID lists targets that must never appear in
#     its transitive link closure: configuration fails if one does, which is how
#     the architecture's link rules (e.g. ps/storage never links gRPC) are kept.
#
#   plexus_cc_binary(NAME <name> SRCS ... DEPS ...)
#   plexus_cc_test(NAME <name> SRCS ... DEPS ... [LABELS ...] [TIMEOUT <s>]
#                  [TEST_PREFIX <prefix>])
#     A GoogleTest binary registered with ctest through gtest_discover_tests
#     (each test's ctest name is <prefix><Suite>.<Test>).

include_guard(GLOBAL)

# Options structs are filled with designated initializers that omit defaulted
# fields, which -Wmissing-field-initializers would flag.
set(PLEXUS_WARNINGS -Wall -Wextra -Werror -Wno-unused-parameter
    -Wno-missing-field-initializers)

function(_plexus_common_target_settings target scope)
  target_include_directories(${target} ${scope} ${PROJECT_SOURCE_DIR})
  if(NOT scope STREQUAL "INTERFACE")
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CXX>:${PLEXUS_WARNINGS}>)
  endif()
endfunction()

function(plexus_cc_library)
  cmake_parse_arguments(A "" "NAME;PUBLIC_INCLUDE" "SRCS;DEPS;FORBID" ${ARGN})
  set(t plexus_${A_NAME})
  if(A_SRCS)
    add_library(${t} STATIC ${A_SRCS})
    _plexus_common_target_settings(${t} PUBLIC)
    target_link_libraries(${t} PUBLIC ${A_DEPS})
    if(A_PUBLIC_INCLUDE)
      target_include_directories(${t} PUBLIC ${A_PUBLIC_INCLUDE})
    endif()
  else()
    add_library(${t} INTERFACE)
    _plexus_common_target_settings(${t} INTERFACE)
    target_link_libraries(${t} INTERFACE ${A_DEPS})
    if(A_PUBLIC_INCLUDE)
      target_include_directories(${t} INTERFACE ${A_PUBLIC_INCLUDE})
    endif()
  endif()
  add_library(plexus::${A_NAME} ALIAS ${t})
  if(A_FORBID)
    string(REPLACE ";" "," forbid "${A_FORBID}")
    set_property(GLOBAL APPEND PROPERTY PLEXUS_LINK_RULES "${t}|${forbid}")
  endif()
endfunction()

function(plexus_cc_binary)
  cmake_parse_arguments(A "" "NAME;OUTPUT_NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  _plexus_common_target_settings(${A_NAME} PRIVATE)
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS})
  if(A_OUTPUT_NAME)
    set_target_properties(${A_NAME} PROPERTIES OUTPUT_NAME ${A_OUTPUT_NAME})
  endif()
  set_target_properties(${A_NAME} PROPERTIES
    RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bin)
endfunction()

function(plexus_cc_test)
  cmake_parse_arguments(A "" "NAME;TIMEOUT;TEST_PREFIX" "SRCS;DEPS;LABELS"
                        ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 120)
  endif()
  add_executable(${A_NAME} ${A_SRCS})
  _plexus_common_target_settings(${A_NAME} PRIVATE)
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gmock
                        plexus::test_main)
  set_target_properties(${A_NAME} PROPERTIES
    RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  # Tests find the daemons through this variable (see tests/util). LABELS
  # only when given: an empty value would swallow the next property name.
  set(props TIMEOUT ${A_TIMEOUT}
            ENVIRONMENT "PLEXUS_BIN_DIR=${PROJECT_BINARY_DIR}/bin")
  if(A_LABELS)
    list(APPEND props LABELS "${A_LABELS}")
  endif()
  gtest_discover_tests(${A_NAME} PROPERTIES ${props} DISCOVERY_TIMEOUT 60
                       TEST_PREFIX "${A_TEST_PREFIX}")
endfunction()

# Walks the transitive link closure of a target (static and interface links).
function(_plexus_link_closure target out)
  set(seen "")
  set(stack ${target})
  while(stack)
    list(POP_BACK stack cur)
    if(NOT TARGET ${cur} OR cur IN_LIST seen)
      continue()
    endif()
    list(APPEND seen ${cur})
    get_target_property(aliased ${cur} ALIASED_TARGET)
    if(aliased)
      list(APPEND stack ${aliased})
      continue()
    endif()
    get_target_property(type ${cur} TYPE)
    set(deps "")
    if(NOT type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(d ${cur} LINK_LIBRARIES)
      if(d)
        list(APPEND deps ${d})
      endif()
    endif()
    get_target_property(d ${cur} INTERFACE_LINK_LIBRARIES)
    if(d)
      list(APPEND deps ${d})
    endif()
    foreach(dep ${deps})
      string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" dep "${dep}")
      list(APPEND stack ${dep})
    endforeach()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

# Called once at the end of the top-level CMakeLists.txt.
function(plexus_check_link_rules)
  get_property(rules GLOBAL PROPERTY PLEXUS_LINK_RULES)
  set(n 0)
  foreach(rule ${rules})
    string(REPLACE "|" ";" parts "${rule}")
    string(REPLACE "," ";" parts "${parts}")
    list(POP_FRONT parts target)
    _plexus_link_closure(${target} closure)
    foreach(forbidden ${parts})
      if(forbidden IN_LIST closure)
        message(FATAL_ERROR
          "link rule broken: ${target} must not link ${forbidden} "
          "(closure: ${closure})")
      endif()
      math(EXPR n "${n} + 1")
    endforeach()
  endforeach()
  message(STATUS "plexus: ${n} link rules hold")
endfunction()
