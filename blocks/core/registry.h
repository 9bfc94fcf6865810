// BlockRegistry: block type name -> factory, so pipelines can be assembled
// from names (FromBlocks entries, and configuration files).
//
//   BlockRegistry registry;
//   RETURN_IF_ERROR(registry.Register<LoopBlock>());  // LoopBlock::kTypeName
//   ASSIGN_OR_RETURN(std::unique_ptr<Block> block,
//                    registry.Create("LoopBlock"));
//
// Registration is explicit (RegisterBuiltinBlocks(registry) in
// blocks/builtin_blocks.h registers the library's blocks): no static
// initialisers that a linker may drop.
//
// Thread-safety: Register is for start-up only and is not synchronised; the
// const methods may then be called from any thread.
#pragma once

#include <ATen/core/ivalue.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/block.h"

namespace loopserve {

// Parameters a factory configures a block with (from a configuration file).
using BlockParams = absl::flat_hash_map<std::string, c10::IValue>;

using BlockFactory =
    std::function<absl::StatusOr<std::unique_ptr<Block>>(const BlockParams&)>;

class BlockRegistry {
 public:
  // Registers `factory` under `type_name`. ALREADY_EXISTS when the name is
  // taken; INVALID_ARGUMENT when it is empty or the factory is null.
  absl::Status Register(std::string type_name, BlockFactory factory);

  // Registers a default-constructible block type under T::kTypeName. Its
  // factory refuses any params with INVALID_ARGUMENT.
  template <typename T>
  absl::Status Register();

  // A new block of `type_name`. NOT_FOUND naming the type (and the
  // registered ones) when unknown; the factory's error otherwise.
  absl::StatusOr<std::unique_ptr<Block>> Create(
      absl::string_view type_name, const BlockParams& params = {}) const;

  bool Contains(absl::string_view type_name) const;
  // Sorted.
  std::vector<std::string> TypeNames() const;

 private:
  absl::flat_hash_map<std::string, BlockFactory> factories_;
};

// INVALID_ARGUMENT naming the first param when `params` is not empty: for
// block types that take none.
absl::Status RefuseParams(absl::string_view type_name,
                          const BlockParams& params);

template <typename T>
absl::Status BlockRegistry::Register() {
  static_assert(std::is_base_of_v<Block, T>);
  return Register(
      std::string(T::kTypeName),
      [](const BlockParams& params) -> absl::StatusOr<std::unique_ptr<Block>> {
        if (absl::Status s = RefuseParams(T::kTypeName, params); !s.ok()) {
          return s;
        }
        return std::make_unique<T>();
      });
}

}  // namespace loopserve
