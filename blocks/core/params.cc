#include "blocks/core/params.h"

#include <c10/util/Type.h>

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"

namespace loopserve {

ValueKind KindOf(const c10::IValue& value) {
  if (value.isNone()) return ValueKind::kNone;
  if (value.isTensor()) return ValueKind::kTensor;
  if (value.isInt()) return ValueKind::kInt;
  if (value.isDouble()) return ValueKind::kDouble;
  if (value.isBool()) return ValueKind::kBool;
  if (value.isString()) return ValueKind::kString;
  if (value.isList()) return ValueKind::kList;
  return ValueKind::kOther;
}

absl::string_view KindName(ValueKind kind) {
  switch (kind) {
    case ValueKind::kNone:
      return "none";
    case ValueKind::kTensor:
      return "tensor";
    case ValueKind::kInt:
      return "int";
    case ValueKind::kDouble:
      return "double";
    case ValueKind::kBool:
      return "bool";
    case ValueKind::kString:
      return "string";
    case ValueKind::kList:
      return "list";
    case ValueKind::kOther:
      return "other";
  }
  return "other";
}

bool TypeHint::AcceptsKind(ValueKind kind) const {
  if (kind == ValueKind::kNone) return false;
  if (Contains(kind)) return true;
  return kind == ValueKind::kInt && Contains(ValueKind::kDouble);
}

std::string TypeHint::ToString() const {
  if (is_any()) return "any";
  std::vector<absl::string_view> names;
  for (ValueKind kind : {ValueKind::kInt, ValueKind::kDouble, ValueKind::kBool,
                         ValueKind::kString, ValueKind::kTensor,
                         ValueKind::kList, ValueKind::kOther}) {
    if (Contains(kind)) names.push_back(KindName(kind));
  }
  return absl::StrJoin(names, " | ");
}

std::string ComponentInterface::Name() const {
  if (type_ == nullptr) return "any";
  std::string name = c10::demangle(type_->name());
  constexpr absl::string_view kNamespace = "loopserve::";
  if (absl::StartsWith(name, kNamespace)) name.erase(0, kNamespace.size());
  return name;
}

}  // namespace loopserve
