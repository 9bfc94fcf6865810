// SerializeRunEvent's bytes must parse back to the same message.
#include "server/run_event_wire.h"

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace loopserve {
namespace {

v1::Value TensorValue(std::vector<int64_t> shape, size_t bytes, char fill) {
  v1::Value value;
  v1::Tensor* t = value.mutable_tensor();
  t->set_datatype("FP32");
  for (int64_t d : shape) t->add_shape(d);
  t->set_raw_contents(std::string(bytes, fill));
  return value;
}

// Serialises `event` and parses the result back.
v1::RunEvent RoundTrip(const v1::RunEvent& event, size_t* slices = nullptr) {
  auto shared = std::make_shared<const v1::RunEvent>(event);
  grpc::ByteBuffer buffer;
  SerializeRunEvent(shared, &buffer);
  std::vector<grpc::Slice> parts;
  EXPECT_TRUE(buffer.Dump(&parts).ok());
  if (slices != nullptr) *slices = parts.size();
  std::string bytes;
  for (const grpc::Slice& part : parts) {
    bytes.append(reinterpret_cast<const char*>(part.begin()), part.size());
  }
  v1::RunEvent parsed;
  EXPECT_TRUE(parsed.ParseFromString(bytes));
  return parsed;
}

void ExpectSame(const v1::RunEvent& a, const v1::RunEvent& b) {
  std::string diff;
  google::protobuf::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(a, b)) << diff;
}

TEST(RunEventWireTest, IterationsWithLargeTensorsRoundTripWithoutCopies) {
  v1::RunEvent event;
  for (int i = 0; i < 3; ++i) {
    v1::Iteration* it = event.mutable_iterations()->add_items();
    it->set_index(i);
    it->set_total(3);
    it->set_loop("pipe/denoise");
    it->set_dropped_before(i == 2 ? 7 : 0);
    (*it->mutable_values())["latents"] =
        TensorValue({1, 4, 64, 64}, 65536, static_cast<char>('a' + i));
    (*it->mutable_values())["step"].set_int64_value(i == 0 ? 0 : -i);
    (*it->mutable_values())["scale"].set_double_value(0.5);
    v1::ValueList* list = (*it->mutable_values())["parts"].mutable_list_value();
    *list->add_values() = TensorValue({2}, 8, 'z');
    *list->add_values() = TensorValue({4096}, 16384, 'y');
    list->add_values()->set_string_value("");
  }
  size_t slices = 0;
  ExpectSame(RoundTrip(event, &slices), event);
  EXPECT_GE(slices, 6u);  // the six large payloads are slices of their own
}

TEST(RunEventWireTest, EmptyAndZeroFields) {
  v1::RunEvent event;
  v1::Iteration* it = event.mutable_iterations()->add_items();
  (*it->mutable_values())["empty"] = TensorValue({0}, 0, 0);
  (*it->mutable_values())["big"] = TensorValue({}, 5000, 'q');  // a scalar
  (*it->mutable_values())["flag"].set_bool_value(false);
  ExpectSame(RoundTrip(event), event);
}

TEST(RunEventWireTest, SmallEventsTakeTheOrdinaryPath) {
  v1::RunEvent started;
  started.mutable_started()->set_run_id("run-1");
  started.mutable_started()->set_queue_ms(0.25);
  size_t slices = 0;
  ExpectSame(RoundTrip(started, &slices), started);
  EXPECT_EQ(slices, 1u);

  v1::RunEvent ints;
  for (int i = 0; i < 100; ++i) {
    v1::Iteration* it = ints.mutable_iterations()->add_items();
    it->set_index(i);
    (*it->mutable_values())["x"].set_int64_value(i + 1);
  }
  ExpectSame(RoundTrip(ints, &slices), ints);
  EXPECT_EQ(slices, 1u);
}

TEST(RunEventWireTest, ResultWithTensorsAndStats) {
  v1::RunEvent event;
  v1::RunResult* result = event.mutable_result();
  (*result->mutable_outputs())["image"] =
      TensorValue({1, 64, 64, 3}, 12288, 'i');
  (*result->mutable_outputs())["x"].set_int64_value(5);
  result->mutable_stats()->set_iterations(5);
  result->mutable_stats()->set_run_ms(1.5);
  result->mutable_stats()->set_iterations_dropped(2);
  ExpectSame(RoundTrip(event), event);
}

// Note [wire drift]
// ~~~~~~~~~~~~~~~~~
// The zero-copy encoder writes RunEvent and every message it reaches field by
// field. A field added to the proto that it does not write would be dropped
// silently, so this test builds RunEvents from the descriptors alone: every
// field of every message reachable from RunEvent set to a non-default value,
// each oneof's members taken in turn (all combinations over the variants),
// and a large tensor in every Value map so the zero-copy path is taken. Each
// must parse back unchanged, and every reachable field must have been set in
// some variant, so a new field is tested the day it is added.
class RunEventExemplars {
 public:
  using Descriptor = google::protobuf::Descriptor;
  using FieldDescriptor = google::protobuf::FieldDescriptor;
  using Message = google::protobuf::Message;
  using OneofDescriptor = google::protobuf::OneofDescriptor;

  RunEventExemplars() { Collect(v1::RunEvent::descriptor()); }

  int variants() const {
    int count = 1;
    for (const OneofDescriptor* oneof : oneofs_) count *= oneof->field_count();
    return count;
  }

  // Variant `v`: the oneofs' members are the digits of `v`, mixed radix.
  v1::RunEvent Make(int v) {
    digits_.clear();
    for (const OneofDescriptor* oneof : oneofs_) {
      digits_[oneof] = v % oneof->field_count();
      v /= oneof->field_count();
    }
    v1::RunEvent event;
    Fill(event, 0);
    return event;
  }

  // Every field of every message RunEvent reaches, by full name.
  const std::set<std::string>& reachable() const { return reachable_; }
  // The fields Make has set so far.
  const std::set<std::string>& set() const { return set_; }

 private:
  static constexpr int kMaxDepth = 10;
  static constexpr size_t kLargePayload = 5000;  // > kZeroCopyMinBytes

  void Collect(const Descriptor* message) {
    if (!seen_.insert(message).second) return;
    for (int i = 0; i < message->oneof_decl_count(); ++i) {
      oneofs_.push_back(message->oneof_decl(i));
    }
    for (int i = 0; i < message->field_count(); ++i) {
      const FieldDescriptor* field = message->field(i);
      if (!message->options().map_entry())
        reachable_.insert(field->full_name());
      if (field->message_type() != nullptr) Collect(field->message_type());
    }
  }

  void Fill(Message& message, int depth) {
    const Descriptor* descriptor = message.GetDescriptor();
    const auto* reflection = message.GetReflection();
    for (int i = 0; i < descriptor->field_count(); ++i) {
      const FieldDescriptor* field = descriptor->field(i);
      if (const OneofDescriptor* oneof = field->containing_oneof()) {
        // Nested Values rotate their kind, so a list holds other kinds.
        const int member = (digits_.at(oneof) + depth) % oneof->field_count();
        if (oneof->field(member) != field) continue;
      }
      if (field->message_type() != nullptr && depth >= kMaxDepth) continue;
      if (!descriptor->options().map_entry()) set_.insert(field->full_name());
      if (field->is_map()) {
        for (const char* key : {"a", "b"}) {
          Message* entry = reflection->AddMessage(&message, field);
          SetScalar(*entry, entry->GetDescriptor()->map_key(), key);
          Fill(*entry->GetReflection()->MutableMessage(
                   entry, entry->GetDescriptor()->map_value()),
               depth + 1);
        }
        if (field->message_type()->map_value()->message_type() ==
            v1::Value::descriptor()) {
          Message* entry = reflection->AddMessage(&message, field);
          SetScalar(*entry, entry->GetDescriptor()->map_key(), "payload");
          v1::Tensor* tensor =
              static_cast<v1::Value*>(
                  entry->GetReflection()->MutableMessage(
                      entry, entry->GetDescriptor()->map_value()))
                  ->mutable_tensor();
          tensor->set_datatype("UINT8");
          tensor->add_shape(kLargePayload);
          tensor->set_raw_contents(std::string(kLargePayload, 'p'));
        }
      } else if (field->is_repeated()) {
        for (int n = 0; n < 2; ++n) {
          if (field->message_type() != nullptr) {
            Fill(*reflection->AddMessage(&message, field), depth + 1);
          } else {
            AddScalar(message, field, n);
          }
        }
      } else if (field->message_type() != nullptr) {
        Fill(*reflection->MutableMessage(&message, field), depth + 1);
      } else {
        SetScalar(message, field, "");
      }
    }
  }

  // A non-default value; `text` for a string key.
  static void SetScalar(Message& message, const FieldDescriptor* field,
                        const std::string& text) {
    const auto* r = message.GetReflection();
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        return r->SetInt32(&message, field, -3);
      case FieldDescriptor::CPPTYPE_INT64:
        return r->SetInt64(&message, field, -300);
      case FieldDescriptor::CPPTYPE_UINT32:
        return r->SetUInt32(&message, field, 7);
      case FieldDescriptor::CPPTYPE_UINT64:
        return r->SetUInt64(&message, field, 700);
      case FieldDescriptor::CPPTYPE_DOUBLE:
        return r->SetDouble(&message, field, 2.5);
      case FieldDescriptor::CPPTYPE_FLOAT:
        return r->SetFloat(&message, field, 1.5f);
      case FieldDescriptor::CPPTYPE_BOOL:
        return r->SetBool(&message, field, true);
      case FieldDescriptor::CPPTYPE_ENUM:
        return r->SetEnumValue(
            &message, field,
            field->enum_type()
                ->value(field->enum_type()->value_count() - 1)
                ->number());
      case FieldDescriptor::CPPTYPE_STRING:
        // Bytes large enough to be referenced, not copied.
        return r->SetString(&message, field,
                            !text.empty() ? text
                            : field->type() == FieldDescriptor::TYPE_BYTES
                                ? std::string(kLargePayload, 'b')
                                : std::string("s"));
      case FieldDescriptor::CPPTYPE_MESSAGE:
        break;
    }
  }

  static void AddScalar(Message& message, const FieldDescriptor* field, int n) {
    const auto* r = message.GetReflection();
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        return r->AddInt32(&message, field, n + 1);
      case FieldDescriptor::CPPTYPE_INT64:
        return r->AddInt64(&message, field, n == 0 ? 4 : 1 << 20);
      case FieldDescriptor::CPPTYPE_UINT32:
        return r->AddUInt32(&message, field, n + 1);
      case FieldDescriptor::CPPTYPE_UINT64:
        return r->AddUInt64(&message, field, n + 1);
      case FieldDescriptor::CPPTYPE_DOUBLE:
        return r->AddDouble(&message, field, n + 0.5);
      case FieldDescriptor::CPPTYPE_FLOAT:
        return r->AddFloat(&message, field, n + 0.5f);
      case FieldDescriptor::CPPTYPE_BOOL:
        return r->AddBool(&message, field, n == 0);
      case FieldDescriptor::CPPTYPE_ENUM:
        return r->AddEnumValue(&message, field, 0);
      case FieldDescriptor::CPPTYPE_STRING:
        return r->AddString(&message, field, std::string(n + 1, 'r'));
      case FieldDescriptor::CPPTYPE_MESSAGE:
        break;
    }
  }

  std::set<const Descriptor*> seen_;
  std::vector<const OneofDescriptor*> oneofs_;
  std::map<const OneofDescriptor*, int> digits_;
  std::set<std::string> reachable_;
  std::set<std::string> set_;
};

TEST(RunEventWireTest, EveryFieldSurvivesTheZeroCopyPath) {
  RunEventExemplars exemplars;
  for (int v = 0; v < exemplars.variants(); ++v) {
    const v1::RunEvent event = exemplars.Make(v);
    SCOPED_TRACE(event.ShortDebugString().substr(0, 200));
    size_t slices = 0;
    ExpectSame(RoundTrip(event, &slices), event);
    if (!event.has_started()) {
      EXPECT_GT(slices, 1u) << "the zero-copy path was not taken";
    }
  }
  std::vector<std::string> never_set;
  for (const std::string& field : exemplars.reachable()) {
    if (!exemplars.set().contains(field)) never_set.push_back(field);
  }
  EXPECT_TRUE(never_set.empty())
      << "fields no variant set: " << ::testing::PrintToString(never_set);
}

TEST(RunEventWireTest, SlicesKeepTheEventAlive) {
  auto event = std::make_shared<v1::RunEvent>();
  (*event->mutable_iterations()->add_items()->mutable_values())["x"] =
      TensorValue({2048}, 8192, 'k');
  grpc::ByteBuffer buffer;
  SerializeRunEvent(event, &buffer);
  EXPECT_GT(event.use_count(), 1);
  buffer.Clear();
  EXPECT_EQ(event.use_count(), 1);
}

}  // namespace
}  // namespace loopserve
