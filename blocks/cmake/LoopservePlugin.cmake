# loopserve_add_plugin(NAME SOURCES...): a loopserve plugin, a shared
# library `loopserve --plugin=PATH` loads (Note [plugin ABI] in
# blocks/core/plugin.h). Used in the tree and, through find_package(loopserve),
# outside it.
function(loopserve_add_plugin name)
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE loopserve::plugin)
  target_compile_features(${name} PRIVATE cxx_std_20)
  # Only what LOOPSERVE_PLUGIN exports is visible; loopserve's own symbols
  # come from the process that loads the plugin.
  set_target_properties(${name} PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
endfunction()
