#include "server/run_event_wire.h"

#include <google/protobuf/io/coded_stream.h>
#include <grpc/slice.h>
#include <grpcpp/support/slice.h>

#include <string>
#include <vector>

namespace loopserve {
namespace {

using google::protobuf::io::CodedOutputStream;

enum WireType : uint32_t { kVarint = 0, kLengthDelimited = 2 };

// Field numbers come from the generated k...FieldNumber constants, never
// literals; a field added to a message the encoder writes must also be
// written here, which RunEventWireTest.EveryFieldSurvivesTheZeroCopyPath
// checks for every message RunEvent reaches.
// A map<K, V> field is a repeated entry message {K key = 1; V value = 2;}.
constexpr uint32_t kMapKey = 1;
constexpr uint32_t kMapValue = 2;

size_t VarintSize(uint64_t value) {
  return CodedOutputStream::VarintSize64(value);
}

size_t TagSize(uint32_t field) { return VarintSize(field << 3); }

size_t LengthDelimitedSize(uint32_t field, size_t length) {
  return TagSize(field) + VarintSize(length) + length;
}

// Sizes of message bodies, as protobuf encodes them.
size_t PackedShapeSize(const v1::Tensor& t) {
  size_t packed = 0;
  for (int64_t d : t.shape()) packed += VarintSize(static_cast<uint64_t>(d));
  return packed;
}

size_t TensorSize(const v1::Tensor& t);
size_t ValueSize(const v1::Value& v);

size_t TensorSize(const v1::Tensor& t) {
  size_t size = 0;
  if (!t.datatype().empty()) {
    size += LengthDelimitedSize(v1::Tensor::kDatatypeFieldNumber,
                                t.datatype().size());
  }
  if (t.shape_size() > 0) {
    size +=
        LengthDelimitedSize(v1::Tensor::kShapeFieldNumber, PackedShapeSize(t));
  }
  if (!t.raw_contents().empty()) {
    size += LengthDelimitedSize(v1::Tensor::kRawContentsFieldNumber,
                                t.raw_contents().size());
  }
  return size;
}

size_t ListSize(const v1::ValueList& list) {
  size_t size = 0;
  for (const v1::Value& item : list.values()) {
    size +=
        LengthDelimitedSize(v1::ValueList::kValuesFieldNumber, ValueSize(item));
  }
  return size;
}

size_t ValueSize(const v1::Value& v) {
  switch (v.kind_case()) {
    case v1::Value::kTensor:
      return LengthDelimitedSize(v1::Value::kTensorFieldNumber,
                                 TensorSize(v.tensor()));
    case v1::Value::kListValue:
      return LengthDelimitedSize(v1::Value::kListValueFieldNumber,
                                 ListSize(v.list_value()));
    default:
      return v.ByteSizeLong();
  }
}

size_t EntrySize(const std::string& key, const v1::Value& value) {
  return LengthDelimitedSize(kMapKey, key.size()) +
         LengthDelimitedSize(kMapValue, ValueSize(value));
}

size_t ValuesSize(const google::protobuf::Map<std::string, v1::Value>& values,
                  uint32_t field) {
  size_t size = 0;
  for (const auto& [key, value] : values) {
    size += LengthDelimitedSize(field, EntrySize(key, value));
  }
  return size;
}

size_t IterationSize(const v1::Iteration& it) {
  size_t size = ValuesSize(it.values(), v1::Iteration::kValuesFieldNumber);
  if (it.index() != 0) {
    size += TagSize(v1::Iteration::kIndexFieldNumber) + VarintSize(it.index());
  }
  if (it.dropped_before() != 0) {
    size += TagSize(v1::Iteration::kDroppedBeforeFieldNumber) +
            VarintSize(it.dropped_before());
  }
  if (!it.loop().empty()) {
    size +=
        LengthDelimitedSize(v1::Iteration::kLoopFieldNumber, it.loop().size());
  }
  if (it.total() != 0) {
    size += TagSize(v1::Iteration::kTotalFieldNumber) + VarintSize(it.total());
  }
  if (!it.preview_png().empty()) {
    size += LengthDelimitedSize(v1::Iteration::kPreviewPngFieldNumber,
                                it.preview_png().size());
  }
  if (!it.checkpoint().empty()) {
    size += LengthDelimitedSize(v1::Iteration::kCheckpointFieldNumber,
                                it.checkpoint().size());
  }
  return size;
}

size_t BatchSize(const v1::IterationBatch& batch) {
  size_t size = 0;
  for (const v1::Iteration& it : batch.items()) {
    size += LengthDelimitedSize(v1::IterationBatch::kItemsFieldNumber,
                                IterationSize(it));
  }
  return size;
}

size_t ResultSize(const v1::RunResult& result) {
  size_t size =
      ValuesSize(result.outputs(), v1::RunResult::kOutputsFieldNumber);
  if (result.has_stats()) {
    size += LengthDelimitedSize(v1::RunResult::kStatsFieldNumber,
                                result.stats().ByteSizeLong());
  }
  return size;
}

// Writes the wire bytes: small fields into a pending buffer that becomes a
// copied slice, large tensor payloads as slices referencing the event.
class Writer {
 public:
  explicit Writer(const std::shared_ptr<const v1::RunEvent>& event)
      : event_(event) {}

  void Tag(uint32_t field, WireType type) { Varint((field << 3) | type); }
  void Varint(uint64_t value) {
    uint8_t buffer[10];
    uint8_t* end = CodedOutputStream::WriteVarint64ToArray(value, buffer);
    pending_.append(reinterpret_cast<char*>(buffer), end - buffer);
  }
  void Header(uint32_t field, size_t length) {
    Tag(field, kLengthDelimited);
    Varint(length);
  }
  void Bytes(uint32_t field, const std::string& bytes) {
    Header(field, bytes.size());
    if (bytes.size() < kZeroCopyMinBytes) {
      pending_ += bytes;
      return;
    }
    Flush();
    // The slice keeps the event alive: Note [zero-copy tensors].
    auto* hold = new std::shared_ptr<const v1::RunEvent>(event_);
    slices_.emplace_back(
        const_cast<char*>(bytes.data()), bytes.size(),
        [](void* p) {
          delete static_cast<std::shared_ptr<const v1::RunEvent>*>(p);
        },
        hold);
  }
  void Message(uint32_t field, const google::protobuf::MessageLite& message) {
    const size_t size = message.ByteSizeLong();
    Header(field, size);
    const size_t at = pending_.size();
    pending_.resize(at + size);
    message.SerializeWithCachedSizesToArray(
        reinterpret_cast<uint8_t*>(pending_.data() + at));
  }

  void Tensor(const v1::Tensor& t) {
    if (!t.datatype().empty())
      Bytes(v1::Tensor::kDatatypeFieldNumber, t.datatype());
    if (t.shape_size() > 0) {
      Header(v1::Tensor::kShapeFieldNumber, PackedShapeSize(t));
      for (int64_t d : t.shape()) Varint(static_cast<uint64_t>(d));
    }
    if (!t.raw_contents().empty()) {
      Bytes(v1::Tensor::kRawContentsFieldNumber, t.raw_contents());
    }
  }

  void Value(const v1::Value& v) {
    switch (v.kind_case()) {
      case v1::Value::kTensor:
        Header(v1::Value::kTensorFieldNumber, TensorSize(v.tensor()));
        Tensor(v.tensor());
        return;
      case v1::Value::kListValue:
        Header(v1::Value::kListValueFieldNumber, ListSize(v.list_value()));
        for (const v1::Value& item : v.list_value().values()) {
          Header(v1::ValueList::kValuesFieldNumber, ValueSize(item));
          Value(item);
        }
        return;
      default: {
        const size_t at = pending_.size();
        pending_.resize(at + v.ByteSizeLong());
        v.SerializeWithCachedSizesToArray(
            reinterpret_cast<uint8_t*>(pending_.data() + at));
        return;
      }
    }
  }

  void Values(const google::protobuf::Map<std::string, v1::Value>& values,
              uint32_t field) {
    for (const auto& [key, value] : values) {
      Header(field, EntrySize(key, value));
      Bytes(kMapKey, key);
      Header(kMapValue, ValueSize(value));
      Value(value);
    }
  }

  void Iteration(const v1::Iteration& it) {
    if (it.index() != 0) {
      Tag(v1::Iteration::kIndexFieldNumber, kVarint);
      Varint(static_cast<uint64_t>(it.index()));
    }
    Values(it.values(), v1::Iteration::kValuesFieldNumber);
    if (it.dropped_before() != 0) {
      Tag(v1::Iteration::kDroppedBeforeFieldNumber, kVarint);
      Varint(it.dropped_before());
    }
    if (!it.loop().empty()) Bytes(v1::Iteration::kLoopFieldNumber, it.loop());
    if (it.total() != 0) {
      Tag(v1::Iteration::kTotalFieldNumber, kVarint);
      Varint(static_cast<uint64_t>(it.total()));
    }
    if (!it.preview_png().empty()) {
      Bytes(v1::Iteration::kPreviewPngFieldNumber, it.preview_png());
    }
    if (!it.checkpoint().empty()) {
      Bytes(v1::Iteration::kCheckpointFieldNumber, it.checkpoint());
    }
  }

  void Finish(grpc::ByteBuffer* out) {
    Flush();
    grpc::ByteBuffer buffer(slices_.data(), slices_.size());
    out->Swap(&buffer);
  }

 private:
  void Flush() {
    if (pending_.empty()) return;
    slices_.emplace_back(pending_);
    pending_.clear();
  }

  const std::shared_ptr<const v1::RunEvent>& event_;
  std::string pending_;
  std::vector<grpc::Slice> slices_;
};

bool HasLargePayload(const v1::Value& value) {
  if (value.has_tensor()) {
    return value.tensor().raw_contents().size() >= kZeroCopyMinBytes;
  }
  for (const v1::Value& item : value.list_value().values()) {
    if (HasLargePayload(item)) return true;
  }
  return false;
}

bool HasLargePayload(const v1::RunEvent& event) {
  for (const v1::Iteration& it : event.iterations().items()) {
    if (it.checkpoint().size() >= kZeroCopyMinBytes) return true;
    for (const auto& [key, value] : it.values()) {
      if (HasLargePayload(value)) return true;
    }
  }
  for (const auto& [key, value] : event.result().outputs()) {
    if (HasLargePayload(value)) return true;
  }
  return false;
}

}  // namespace

void SerializeRunEvent(const std::shared_ptr<const v1::RunEvent>& event,
                       grpc::ByteBuffer* out) {
  if (!HasLargePayload(*event)) {
    // Nothing worth referencing: protobuf's own serialiser is faster at
    // thousands of small iterations.
    const size_t size = event->ByteSizeLong();
    grpc_slice raw = grpc_slice_malloc(size);
    event->SerializeWithCachedSizesToArray(GRPC_SLICE_START_PTR(raw));
    grpc::Slice slice(raw, grpc::Slice::STEAL_REF);
    grpc::ByteBuffer buffer(&slice, 1);
    out->Swap(&buffer);
    return;
  }
  Writer writer(event);
  switch (event->event_case()) {
    case v1::RunEvent::kStarted:
      writer.Message(v1::RunEvent::kStartedFieldNumber, event->started());
      break;
    case v1::RunEvent::kIterations: {
      const v1::IterationBatch& batch = event->iterations();
      writer.Header(v1::RunEvent::kIterationsFieldNumber, BatchSize(batch));
      for (const v1::Iteration& it : batch.items()) {
        writer.Header(v1::IterationBatch::kItemsFieldNumber, IterationSize(it));
        writer.Iteration(it);
      }
      break;
    }
    case v1::RunEvent::kResult: {
      const v1::RunResult& result = event->result();
      writer.Header(v1::RunEvent::kResultFieldNumber, ResultSize(result));
      writer.Values(result.outputs(), v1::RunResult::kOutputsFieldNumber);
      if (result.has_stats()) {
        writer.Message(v1::RunResult::kStatsFieldNumber, result.stats());
      }
      break;
    }
    case v1::RunEvent::EVENT_NOT_SET:
      break;
  }
  writer.Finish(out);
}

}  // namespace loopserve
