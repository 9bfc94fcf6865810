#include "engine/pipeline_config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "blocks/core/composite.h"
#include "engine/digest.h"
#include "engine/tensor_codec.h"
#include "loopserve/v1/config.pb.h"
#include "util/file.h"
#include "util/sorted_keys.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

using google::protobuf::TextFormat;
using ParseInfoTree = google::protobuf::TextFormat::ParseInfoTree;

// Collects the text-format parser's first error with its position.
class FirstErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (error_.empty()) {
      error_ = absl::StrCat(line + 1, ":", column + 1, ": ", message);
    }
  }
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

const google::protobuf::FieldDescriptor* FieldOf(
    const google::protobuf::Descriptor* message, const char* name) {
  return message->FindFieldByName(name);
}

// "SOURCE:LINE:COL: " for field `field` (index `index`, -1 when singular)
// of the message `tree` describes; "SOURCE: " when it cannot say.
std::string Where(const std::string& source, const ParseInfoTree* tree,
                  const google::protobuf::FieldDescriptor* field, int index) {
  if (tree != nullptr) {
    const auto location = tree->GetLocation(field, index);
    if (location.line >= 0) {
      return absl::StrCat(source, ":", location.line + 1, ":",
                          location.column + 1, ": ");
    }
  }
  return absl::StrCat(source, ": ");
}

// "SOURCE:LINE:COL: " of the entry that binds `role` in `pipeline`'s
// components map (`tree` describes `pipeline`).
std::string RoleWhere(const std::string& source, const ParseInfoTree* tree,
                      const v1::PipelineConfig& pipeline,
                      absl::string_view role) {
  // A map's entries, read through reflection, are in the order parsed,
  // which is the order the ParseInfoTree indexes them by.
  const auto* field = FieldOf(v1::PipelineConfig::descriptor(), "components");
  const auto* reflection = pipeline.GetReflection();
  for (int i = 0; i < reflection->FieldSize(pipeline, field); ++i) {
    const google::protobuf::Message& entry =
        reflection->GetRepeatedMessage(pipeline, field, i);
    const auto* key = entry.GetDescriptor()->map_key();
    if (entry.GetReflection()->GetString(entry, key) == role) {
      return Where(source, tree, field, i);
    }
  }
  return Where(source, tree, field, -1);
}

// A configuration error, whatever the code of `status` (an unknown type's
// NOT_FOUND, a duplicate's ALREADY_EXISTS): INVALID_ARGUMENT,
// "WHERE CONTEXT: MESSAGE".
absl::Status ConfigError(absl::string_view where, absl::string_view context,
                         const absl::Status& status) {
  return absl::InvalidArgumentError(
      absl::StrCat(where, context, ": ", status.message()));
}

absl::StatusOr<BlockParams> DecodeParams(
    const google::protobuf::Map<std::string, v1::Value>& params) {
  BlockParams out;
  for (const auto& [name, value] : params) {
    absl::StatusOr<c10::IValue> decoded = DecodeValue(value, DecodeLimits{});
    if (!decoded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("param '", name, "': ", decoded.status().message()));
    }
    out.emplace(name, *std::move(decoded));
  }
  return out;
}

// The block `config` describes, with its sub-blocks. `tree` describes
// `config`; `where` locates it.
absl::StatusOr<std::unique_ptr<Block>> BuildBlock(
    const v1::BlockConfig& config, const std::string& path,
    const ParseInfoTree* tree, const std::string& where,
    const std::string& source, const std::string& pipeline,
    const BlockRegistry& registry) {
  const std::string context = absl::StrCat("pipeline '", pipeline, "', block '",
                                           path.empty() ? "<root>" : path, "'");
  auto fail = [&](const absl::Status& status) {
    return ConfigError(where, context, status);
  };
  if (config.type().empty()) {
    return fail(absl::InvalidArgumentError("type is missing"));
  }
  absl::StatusOr<BlockParams> params = DecodeParams(config.params());
  if (!params.ok()) return fail(params.status());
  absl::StatusOr<std::unique_ptr<Block>> block =
      registry.Create(config.type(), *params);
  if (!block.ok()) return fail(block.status());
  auto* composite = dynamic_cast<CompositeBlock*>(block->get());
  if (composite == nullptr && !config.blocks().empty()) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("block type '", config.type(), "' holds no blocks, but ",
                     config.blocks_size(), " are given")));
  }
  if (composite == nullptr ||
      (config.blocks().empty() && composite->default_sub_blocks().empty())) {
    return block;
  }

  const auto* blocks_field = FieldOf(v1::BlockConfig::descriptor(), "blocks");
  std::vector<SubBlock> children;
  for (int i = 0; i < config.blocks_size(); ++i) {
    const v1::BlockConfig& child = config.blocks(i);
    const std::string child_where = Where(source, tree, blocks_field, i);
    if (child.name().empty()) {
      return ConfigError(child_where, context,
                         absl::InvalidArgumentError(
                             absl::StrCat("sub-block ", i, " has no name")));
    }
    const std::string child_path =
        path.empty() ? child.name() : absl::StrCat(path, "/", child.name());
    ASSIGN_OR_RETURN(
        std::unique_ptr<Block> built,
        BuildBlock(
            child, child_path,
            tree == nullptr ? nullptr : tree->GetTreeForNested(blocks_field, i),
            child_where, source, pipeline, registry));
    children.push_back({.name = child.name(), .block = std::move(built)});
  }
  // Note [default sub-blocks]: the configuration says what differs.
  absl::StatusOr<std::vector<SubBlock>> sub_blocks =
      WithDefaultSubBlocks(*composite, registry, std::move(children));
  if (!sub_blocks.ok()) return fail(sub_blocks.status());
  if (absl::Status s = composite->SetSubBlocks(*std::move(sub_blocks));
      !s.ok()) {
    return fail(s);
  }
  return block;
}

// What a pipeline's fingerprint takes from the configuration: its own
// entry, and each component it binds, with the contents of the files the
// component's params name (its model): a checkpoint must not resume where
// the same names hold other weights.
std::string ConfigDigest(const v1::ServerConfig& config,
                         const v1::PipelineConfig& pipeline,
                         const ComponentContext& context) {
  std::string digest = Sha256(DeterministicBytes(pipeline));
  absl::flat_hash_set<std::string> bound;
  for (const auto& [role, names] : pipeline.components()) {
    for (absl::string_view name : absl::StrSplit(names, '|')) {
      bound.insert(std::string(absl::StripAsciiWhitespace(name)));
    }
  }
  for (const v1::ComponentConfig& component : config.components()) {
    if (!bound.contains(component.name())) continue;
    absl::StrAppend(&digest, Sha256(DeterministicBytes(component)));
    for (const std::string& key : SortedKeys(component.params())) {
      const v1::Value& value = component.params().at(key);
      if (value.kind_case() != v1::Value::kStringValue) continue;
      const std::string path = context.ResolvePath(value.string_value());
      std::error_code error;
      if (!std::filesystem::is_regular_file(path, error)) continue;
      if (std::optional<std::string> file = Sha256File(path)) {
        absl::StrAppend(&digest, *file);
      }
    }
  }
  return Sha256(digest);
}

// A parsed configuration, and where each of its fields was in the text.
struct ParsedConfig {
  explicit ParsedConfig(const std::string& source) : source(source) {}

  const std::string& source;
  v1::ServerConfig config;
  ParseInfoTree tree;
  const google::protobuf::FieldDescriptor* components_field =
      FieldOf(v1::ServerConfig::descriptor(), "components");
  const google::protobuf::FieldDescriptor* pipelines_field =
      FieldOf(v1::ServerConfig::descriptor(), "pipelines");
  const google::protobuf::FieldDescriptor* root_field =
      FieldOf(v1::PipelineConfig::descriptor(), "blocks");
};

absl::Status Parse(const ConfigSource& config, ParsedConfig& parsed) {
  FirstErrorCollector errors;
  TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  parser.WriteLocationsTo(&parsed.tree);
  if (!parser.ParseFromString(config.text, &parsed.config)) {
    return absl::InvalidArgumentError(
        absl::StrCat(config.source, ":", errors.error()));
  }
  return absl::OkStatus();
}

// Every component of the configuration, created through `registry`; what
// they note (into context.notes) goes to the catalog's notes, each saying
// where it came from.
absl::StatusOr<Components> LoadComponents(const ParsedConfig& parsed,
                                          const ComponentRegistry& registry,
                                          const ComponentContext& context,
                                          PipelineCatalog& catalog) {
  std::vector<std::string>& notes = *context.notes;
  Components loaded;
  for (int i = 0; i < parsed.config.components_size(); ++i) {
    const v1::ComponentConfig& component = parsed.config.components(i);
    const std::string label = absl::StrCat(
        "component '", component.name(), "' (",
        component.type().empty() ? "no type" : component.type(), ")");
    const std::string where =
        Where(parsed.source, &parsed.tree, parsed.components_field, i);
    auto fail = [&](const absl::Status& status) {
      return ConfigError(where, label, status);
    };
    if (component.name().empty()) {
      return fail(absl::InvalidArgumentError("name is missing"));
    }
    if (component.type().empty()) {
      return fail(absl::InvalidArgumentError("type is missing"));
    }
    if (loaded.Contains(component.name())) {
      return fail(absl::InvalidArgumentError("the name is used twice"));
    }
    absl::StatusOr<BlockParams> params = DecodeParams(component.params());
    if (!params.ok()) return fail(params.status());
    if (absl::Status s = registry.Create(component.type(), component.name(),
                                         *params, context, loaded);
        !s.ok()) {
      return fail(s);
    }
    for (const std::string& note : notes) {
      catalog.AddNote(absl::StrCat(where, label, ": ", note));
    }
    notes.clear();
  }
  return loaded;
}

// A pipeline's roles, bound to the loaded components they name ("a", or
// "a | b | c": a choice, the first the default).
absl::StatusOr<Components> BindRoles(const ParsedConfig& parsed,
                                     const v1::PipelineConfig& pipeline,
                                     const ParseInfoTree* pipeline_tree,
                                     const std::string& label,
                                     const Components& loaded) {
  Components bound;
  for (const auto& entry : pipeline.components()) {
    // Not a structured binding: clang 14 (the fuzz build's) cannot
    // capture one in the lambda below.
    const std::string& role = entry.first;
    const std::string& value = entry.second;
    std::vector<std::string> names = absl::StrSplit(value, '|');
    for (std::string& name : names) {
      name = std::string(absl::StripAsciiWhitespace(name));
    }
    auto fail = [&](const absl::Status& status) {
      return ConfigError(
          RoleWhere(parsed.source, pipeline_tree, pipeline, role), label,
          status);
    };
    for (const std::string& name : names) {
      if (!loaded.Contains(name)) {
        return fail(absl::InvalidArgumentError(
            absl::StrCat("role '", role, "' names component '", name,
                         "', which is not defined")));
      }
    }
    if (absl::Status s = bound.AddChoices(role, loaded, names); !s.ok()) {
      return fail(s);
    }
  }
  return bound;
}

// The configuration's pipeline `i`: its block tree, built through
// `blocks`, bound to its roles and added to `catalog`.
absl::Status BuildPipeline(const ParsedConfig& parsed, int i,
                           const BlockRegistry& blocks,
                           const Components& loaded,
                           const ComponentContext& context,
                           PipelineCatalog& catalog) {
  const std::string& source = parsed.source;
  const v1::PipelineConfig& pipeline = parsed.config.pipelines(i);
  const std::string label = absl::StrCat("pipeline '", pipeline.name(), "'");
  const ParseInfoTree* pipeline_tree =
      parsed.tree.GetTreeForNested(parsed.pipelines_field, i);
  const std::string where =
      Where(source, &parsed.tree, parsed.pipelines_field, i);
  if (pipeline.name().empty()) {
    return ConfigError(where, label,
                       absl::InvalidArgumentError("name is missing"));
  }
  if (!pipeline.has_blocks()) {
    return ConfigError(where, label,
                       absl::InvalidArgumentError("blocks are missing"));
  }
  ASSIGN_OR_RETURN(Components bound,
                   BindRoles(parsed, pipeline, pipeline_tree, label, loaded));
  ASSIGN_OR_RETURN(
      std::unique_ptr<Block> root,
      BuildBlock(pipeline.blocks(), "",
                 pipeline_tree == nullptr
                     ? nullptr
                     : pipeline_tree->GetTreeForNested(parsed.root_field, -1),
                 Where(source, pipeline_tree, parsed.root_field, -1), source,
                 pipeline.name(), blocks));
  // Every role a block expects must be bound, to a component of the
  // interface it declares; a wrong one is reported where it is bound.
  const std::string digest = ConfigDigest(parsed.config, pipeline, context);
  std::string role;
  if (absl::Status s = catalog.Add(pipeline.name(), pipeline.description(),
                                   std::move(root), std::move(bound), &role);
      !s.ok()) {
    if (!role.empty()) {
      return ConfigError(pipeline.components().contains(role)
                             ? RoleWhere(source, pipeline_tree, pipeline, role)
                             : where,
                         absl::StrCat(label, ", role '", role, "'"), s);
    }
    // The catalog's errors name the pipeline already.
    return absl::InvalidArgumentError(absl::StrCat(where, s.message()));
  }
  return catalog.AddToFingerprint(pipeline.name(), digest);
}

}  // namespace

absl::Status LoadServerConfig(const ConfigSource& config,
                              const BlockRegistry& blocks,
                              const ComponentRegistry& components,
                              c10::Device device, PipelineCatalog& catalog,
                              const BatchingOptions& batching) {
  ParsedConfig parsed(config.source);
  RETURN_IF_ERROR(Parse(config, parsed));
  std::vector<std::string> notes;
  const ComponentContext context{.device = device,
                                 .base_dir = config.base_dir,
                                 .notes = &notes,
                                 .batching = batching};
  // Components first: pipelines refer to them by name.
  ASSIGN_OR_RETURN(const Components loaded,
                   LoadComponents(parsed, components, context, catalog));
  for (int i = 0; i < parsed.config.pipelines_size(); ++i) {
    RETURN_IF_ERROR(BuildPipeline(parsed, i, blocks, loaded, context, catalog));
  }
  return absl::OkStatus();
}

absl::StatusOr<ConfigSource> ReadConfigSource(const std::string& path) {
  std::optional<std::string> text = ReadWholeFile(path);
  if (!text) {
    return absl::NotFoundError(
        absl::StrCat("cannot read configuration file '", path, "'"));
  }
  return ConfigSource{
      .text = *std::move(text),
      .source = path,
      .base_dir = std::filesystem::path(path).parent_path().string()};
}

}  // namespace loopserve
