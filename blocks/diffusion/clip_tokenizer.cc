#include "blocks/diffusion/clip_tokenizer.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <optional>
#include <queue>

#include "absl/strings/str_cat.h"
#include "blocks/diffusion/json_file.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

using Json = google::protobuf::Value;

// ---- reading tokenizer.json ----

// The file's object, as a Value for the helpers below.
absl::StatusOr<Json> ReadJson(const std::string& path) {
  ASSIGN_OR_RETURN(google::protobuf::Struct object, ReadJsonObject(path));
  Json json;
  *json.mutable_struct_value() = std::move(object);
  return json;
}

const Json* Field(const Json& object, absl::string_view key) {
  if (object.kind_case() != Json::kStructValue) return nullptr;
  const auto& fields = object.struct_value().fields();
  auto it = fields.find(std::string(key));
  return it == fields.end() ? nullptr : &it->second;
}

std::string StringField(const Json& object, absl::string_view key) {
  const Json* value = Field(object, key);
  return value != nullptr && value->kind_case() == Json::kStringValue
             ? value->string_value()
             : "";
}

bool BoolField(const Json& object, absl::string_view key) {
  const Json* value = Field(object, key);
  return value != nullptr && value->kind_case() == Json::kBoolValue &&
         value->bool_value();
}

// True when `value` is the JSON `expected` (maps compared as maps).
bool JsonEquals(const Json* value, absl::string_view expected) {
  Json parsed;
  const auto status = google::protobuf::util::JsonStringToMessage(
      std::string(expected), &parsed);
  return status.ok() && value != nullptr &&
         google::protobuf::util::MessageDifferencer::Equals(*value, parsed);
}

// What transformers' CLIPTokenizer sets (tokenization_clip.py).
constexpr absl::string_view kClipNormalizer = R"json(
  {"type": "Sequence", "normalizers": [
    {"type": "NFC"},
    {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
    {"type": "Lowercase"}]})json";
constexpr absl::string_view kClipSplit = R"json(
  {"type": "Split", "pattern": {"Regex":
    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
   "behavior": "Removed", "invert": true})json";

// ---- Unicode ----

bool IsSpace(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

bool IsLetter(char32_t c) {
  return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_L_MASK) != 0;
}

bool IsNumber(char32_t c) {
  return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_N_MASK) != 0;
}

bool IsOther(char32_t c) { return !IsSpace(c) && !IsLetter(c) && !IsNumber(c); }

std::optional<std::u32string> DecodeUtf8(absl::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  const int32_t length = static_cast<int32_t>(text.size());
  for (int32_t i = 0; i < length;) {
    UChar32 c;
    U8_NEXT(bytes, i, length, c);
    if (c < 0) return std::nullopt;
    out.push_back(static_cast<char32_t>(c));
  }
  return out;
}

void AppendUtf8(char32_t c, std::string& out) {
  char buffer[U8_MAX_LENGTH];
  int32_t length = 0;
  U8_APPEND_UNSAFE(reinterpret_cast<uint8_t*>(buffer), length,
                   static_cast<UChar32>(c));
  out.append(buffer, static_cast<size_t>(length));
}

std::u32string ToU32(const icu::UnicodeString& text) {
  std::u32string out;
  for (int32_t i = 0; i < text.length();) {
    const UChar32 c = text.char32At(i);
    out.push_back(static_cast<char32_t>(c));
    i += U16_LENGTH(c);
  }
  return out;
}

// NFC; whitespace runs -> " "; each character lower-cased alone, as
// Rust's char::to_lowercase (full mappings: "İ" -> "i̇"; no final sigma).
std::u32string Normalize(const std::u32string& text) {
  icu::UnicodeString utf16;
  for (char32_t c : text) utf16.append(static_cast<UChar32>(c));
  UErrorCode error = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(error);
  const icu::UnicodeString composed = nfc->normalize(utf16, error);
  const std::u32string chars = ToU32(U_SUCCESS(error) ? composed : utf16);
  std::u32string out;
  out.reserve(chars.size());
  for (size_t i = 0; i < chars.size();) {
    if (IsSpace(chars[i])) {
      out.push_back(U' ');
      while (i < chars.size() && IsSpace(chars[i])) ++i;
      continue;
    }
    UChar in[2];
    int32_t in_length = 0;
    U16_APPEND_UNSAFE(in, in_length, static_cast<UChar32>(chars[i]));
    UChar lower[8];
    UErrorCode lower_error = U_ZERO_ERROR;
    const int32_t lower_length =
        u_strToLower(lower, 8, in, in_length, "", &lower_error);
    if (U_SUCCESS(lower_error)) {
      for (int32_t j = 0; j < lower_length;) {
        UChar32 c;
        U16_NEXT(lower, j, lower_length, c);
        out.push_back(static_cast<char32_t>(c));
      }
    } else {
      out.push_back(chars[i]);
    }
    ++i;
  }
  return out;
}

// The length of the contraction ('s 't 're 've 'm 'll 'd) at `pos`, or 0.
size_t ContractionAt(const std::u32string& text, size_t pos) {
  if (text[pos] != U'\'') return 0;
  for (std::u32string_view suffix :
       {U"s", U"t", U"re", U"ve", U"m", U"ll", U"d"}) {
    if (std::u32string_view(text).substr(pos + 1, suffix.size()) == suffix) {
      return 1 + suffix.size();
    }
  }
  return 0;
}

size_t RunOf(const std::u32string& text, size_t pos, bool (*in)(char32_t)) {
  size_t end = pos;
  while (end < text.size() && in(text[end])) ++end;
  return end - pos;
}

// CLIP's word pattern: the (start, length) of each word of `text`.
std::vector<std::pair<size_t, size_t>> ClipWords(const std::u32string& text) {
  static constexpr std::u32string_view kSpecials[] = {U"<|startoftext|>",
                                                      U"<|endoftext|>"};
  std::vector<std::pair<size_t, size_t>> words;
  for (size_t pos = 0; pos < text.size();) {
    size_t length = 0;
    for (std::u32string_view special : kSpecials) {
      if (std::u32string_view(text).substr(pos, special.size()) == special) {
        length = special.size();
        break;
      }
    }
    if (length == 0) length = ContractionAt(text, pos);
    if (length == 0 && IsLetter(text[pos])) length = RunOf(text, pos, IsLetter);
    if (length == 0 && IsNumber(text[pos])) length = 1;
    if (length == 0 && IsOther(text[pos])) length = RunOf(text, pos, IsOther);
    if (length == 0) {  // a space
      ++pos;
      continue;
    }
    words.emplace_back(pos, length);
    pos += length;
  }
  return words;
}

// GPT-2's byte-level split of a word without spaces: contractions, letter
// runs, number runs, runs of anything else.
std::vector<std::u32string> ByteLevelWords(const std::u32string& word) {
  std::vector<std::u32string> parts;
  for (size_t pos = 0; pos < word.size();) {
    size_t length = ContractionAt(word, pos);
    if (length == 0 && IsLetter(word[pos])) length = RunOf(word, pos, IsLetter);
    if (length == 0 && IsNumber(word[pos])) length = RunOf(word, pos, IsNumber);
    if (length == 0) length = std::max<size_t>(RunOf(word, pos, IsOther), 1);
    parts.push_back(word.substr(pos, length));
    pos += length;
  }
  return parts;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ClipTokenizer>> ClipTokenizer::Load(
    const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/tokenizer.json");
  ASSIGN_OR_RETURN(const Json json, ReadJson(path));
  auto refuse = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "': ", what,
                     "; loopserve's tokenizer is CLIP's byte-pair encoding "
                     "as transformers' CLIPTokenizer saves it"));
  };
  std::shared_ptr<ClipTokenizer> tokenizer(new ClipTokenizer());

  const Json* model = Field(json, "model");
  if (model == nullptr || StringField(*model, "type") != "BPE" ||
      StringField(*model, "end_of_word_suffix") != "</w>" ||
      !StringField(*model, "continuing_subword_prefix").empty() ||
      BoolField(*model, "byte_fallback") ||
      BoolField(*model, "ignore_merges")) {
    return refuse(
        "'model' is not a BPE with end_of_word_suffix '</w>' (and no "
        "byte_fallback, continuing_subword_prefix or ignore_merges)");
  }
  if (const Json* dropout = Field(*model, "dropout");
      dropout != nullptr && dropout->kind_case() != Json::kNullValue) {
    return refuse("'model.dropout' is set");
  }
  if (!JsonEquals(Field(json, "normalizer"), kClipNormalizer)) {
    return refuse("'normalizer' is not CLIP's (NFC, whitespace, lowercase)");
  }
  const Json* pre = Field(json, "pre_tokenizer");
  const Json* pre_list = pre ? Field(*pre, "pretokenizers") : nullptr;
  if (pre_list == nullptr || pre_list->kind_case() != Json::kListValue ||
      pre_list->list_value().values_size() != 2 ||
      !JsonEquals(&pre_list->list_value().values(0), kClipSplit) ||
      StringField(pre_list->list_value().values(1), "type") != "ByteLevel" ||
      BoolField(pre_list->list_value().values(1), "add_prefix_space") ||
      !BoolField(pre_list->list_value().values(1), "use_regex")) {
    return refuse(
        "'pre_tokenizer' is not CLIP's (its word pattern, then ByteLevel "
        "without a prefix space)");
  }

  const Json* vocab = Field(*model, "vocab");
  if (vocab == nullptr || vocab->kind_case() != Json::kStructValue) {
    return refuse("'model.vocab' is not an object");
  }
  for (const auto& [token, id] : vocab->struct_value().fields()) {
    if (id.kind_case() != Json::kNumberValue) {
      return refuse(
          absl::StrCat("vocabulary entry '", token, "' is not a number"));
    }
    tokenizer->vocab_[token] = static_cast<int64_t>(id.number_value());
  }
  const Json* merges = Field(*model, "merges");
  if (merges == nullptr || merges->kind_case() != Json::kListValue) {
    return refuse("'model.merges' is not a list");
  }
  int32_t rank = 0;
  for (const Json& merge : merges->list_value().values()) {
    // ["a", "b"] (tokenizers >= 0.20) or "a b".
    std::string key;
    if (merge.kind_case() == Json::kStringValue) {
      key = merge.string_value();
    } else if (merge.kind_case() == Json::kListValue &&
               merge.list_value().values_size() == 2) {
      key = absl::StrCat(merge.list_value().values(0).string_value(), " ",
                         merge.list_value().values(1).string_value());
    } else {
      return refuse(absl::StrCat("merge ", rank, " is not a pair"));
    }
    tokenizer->merge_ranks_.try_emplace(key, rank++);
  }

  const Json* added = Field(json, "added_tokens");
  if (added != nullptr && added->kind_case() == Json::kListValue) {
    for (const Json& token : added->list_value().values()) {
      const std::string content = StringField(token, "content");
      if (BoolField(token, "single_word") || BoolField(token, "lstrip") ||
          BoolField(token, "rstrip") || BoolField(token, "normalized")) {
        return refuse(absl::StrCat("added token '", content,
                                   "' is single_word, lstrip, rstrip or "
                                   "normalized"));
      }
      const Json* id = Field(token, "id");
      std::optional<std::u32string> text = DecodeUtf8(content);
      if (id == nullptr || id->kind_case() != Json::kNumberValue || !text ||
          text->empty()) {
        return refuse("an added token has no id or no text");
      }
      tokenizer->added_.push_back(
          {*std::move(text), static_cast<int64_t>(id->number_value())});
      tokenizer->vocab_.try_emplace(content,
                                    static_cast<int64_t>(id->number_value()));
    }
  }
  std::stable_sort(tokenizer->added_.begin(), tokenizer->added_.end(),
                   [](const AddedToken& a, const AddedToken& b) {
                     return a.text.size() > b.text.size();
                   });

  const Json* post = Field(json, "post_processor");
  auto special_id = [&](absl::string_view key) -> std::optional<int64_t> {
    const Json* pair = post ? Field(*post, key) : nullptr;
    if (pair == nullptr || pair->kind_case() != Json::kListValue ||
        pair->list_value().values_size() != 2 ||
        pair->list_value().values(1).kind_case() != Json::kNumberValue) {
      return std::nullopt;
    }
    return static_cast<int64_t>(pair->list_value().values(1).number_value());
  };
  const std::optional<int64_t> bos = special_id("cls");
  const std::optional<int64_t> eos = special_id("sep");
  if (post == nullptr || StringField(*post, "type") != "RobertaProcessing" ||
      !bos || !eos) {
    return refuse(
        "'post_processor' is not a RobertaProcessing with 'cls' (<bos>) and "
        "'sep' (<eos>)");
  }
  tokenizer->bos_id_ = *bos;
  tokenizer->eos_id_ = *eos;

  // The byte -> character map of GPT-2's byte-level encoding: printable
  // Latin-1 bytes stand for themselves, the others for 256, 257, ...
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable =
        (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    AppendUtf8(printable ? static_cast<char32_t>(b) : next++,
               tokenizer->byte_symbols_[b]);
  }

  const std::string config_path = absl::StrCat(dir, "/tokenizer_config.json");
  ASSIGN_OR_RETURN(const Json config, ReadJson(config_path));
  const Json* max_length = Field(config, "model_max_length");
  if (max_length == nullptr || max_length->kind_case() != Json::kNumberValue ||
      max_length->number_value() < 2 || max_length->number_value() > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", config_path,
                     "': 'model_max_length' must be a number in [2, 4096]"));
  }
  tokenizer->max_length_ = static_cast<int64_t>(max_length->number_value());
  // pad_token: a string, or an AddedToken's {"content": ...}.
  const Json* pad = Field(config, "pad_token");
  std::string pad_text = "<|endoftext|>";
  if (pad != nullptr && pad->kind_case() == Json::kStringValue) {
    pad_text = pad->string_value();
  } else if (pad != nullptr && pad->kind_case() == Json::kStructValue) {
    pad_text = StringField(*pad, "content");
  }
  auto pad_id = tokenizer->vocab_.find(pad_text);
  if (pad_id == tokenizer->vocab_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", config_path, "': 'pad_token' '", pad_text,
                     "' is not in the vocabulary"));
  }
  tokenizer->pad_id_ = pad_id->second;
  auto unknown = tokenizer->vocab_.find(StringField(*model, "unk_token"));
  if (unknown == tokenizer->vocab_.end()) {
    return refuse("'model.unk_token' is not in the vocabulary");
  }
  tokenizer->unknown_id_ = unknown->second;
  return std::shared_ptr<const ClipTokenizer>(std::move(tokenizer));
}

absl::StatusOr<std::vector<int64_t>> ClipTokenizer::Encode(
    absl::string_view text) const {
  const std::optional<std::u32string> chars = DecodeUtf8(text);
  if (!chars) return absl::InvalidArgumentError("the text is not UTF-8");
  const size_t limit = static_cast<size_t>(max_length_) - 2;
  std::vector<int64_t> ids = {bos_id_};
  ids.reserve(static_cast<size_t>(max_length_));
  // Cut at the added tokens, leftmost first, the longest where several
  // start at one place.
  size_t start = 0;
  for (size_t pos = 0; pos < chars->size() && ids.size() <= limit;) {
    const AddedToken* match = nullptr;
    for (const AddedToken& token : added_) {
      if (std::u32string_view(*chars).substr(pos, token.text.size()) ==
          token.text) {
        match = &token;
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    EncodeText(chars->substr(start, pos - start), limit + 1, ids);
    if (ids.size() <= limit) ids.push_back(match->id);
    pos += match->text.size();
    start = pos;
  }
  if (start < chars->size()) {
    EncodeText(chars->substr(start), limit + 1, ids);
  }
  ids.resize(std::min(ids.size(), limit + 1));
  ids.push_back(eos_id_);
  ids.resize(static_cast<size_t>(max_length_), pad_id_);
  return ids;
}

void ClipTokenizer::EncodeText(const std::u32string& text, size_t limit,
                               std::vector<int64_t>& ids) const {
  if (text.empty() || ids.size() >= limit) return;
  const std::u32string normalized = Normalize(text);
  for (const auto& [start, length] : ClipWords(normalized)) {
    for (const std::u32string& word :
         ByteLevelWords(normalized.substr(start, length))) {
      if (ids.size() >= limit) return;
      std::string utf8;
      for (char32_t c : word) AppendUtf8(c, utf8);
      EncodeWord(utf8, ids);
    }
  }
}

void ClipTokenizer::EncodeWord(absl::string_view utf8,
                               std::vector<int64_t>& ids) const {
  struct Symbol {
    std::string text;
    int prev;
    int next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(utf8.size());
  for (size_t i = 0; i < utf8.size(); ++i) {
    const bool last = i + 1 == utf8.size();
    symbols.push_back(
        {.text = byte_symbols_[static_cast<unsigned char>(utf8[i])] +
                 (last ? "</w>" : ""),
         .prev = static_cast<int>(i) - 1,
         .next = last ? -1 : static_cast<int>(i) + 1});
  }
  auto rank_of = [&](int left) -> std::optional<int32_t> {
    const int right = symbols[left].next;
    if (right < 0) return std::nullopt;
    auto it = merge_ranks_.find(
        absl::StrCat(symbols[left].text, " ", symbols[right].text));
    if (it == merge_ranks_.end()) return std::nullopt;
    return it->second;
  };
  // (rank, position of the pair's left symbol): the lowest rank first, the
  // leftmost among equals. An entry is stale when its pair has changed.
  using Candidate = std::pair<int32_t, int>;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  for (int i = 0; i < static_cast<int>(symbols.size()); ++i) {
    if (auto rank = rank_of(i)) queue.emplace(*rank, i);
  }
  std::vector<bool> alive(symbols.size(), true);
  while (!queue.empty()) {
    const auto [rank, left] = queue.top();
    queue.pop();
    if (!alive[left] || rank_of(left) != rank) continue;
    const int right = symbols[left].next;
    symbols[left].text += symbols[right].text;
    alive[right] = false;
    symbols[left].next = symbols[right].next;
    if (symbols[left].next >= 0) symbols[symbols[left].next].prev = left;
    if (symbols[left].prev >= 0) {
      if (auto r = rank_of(symbols[left].prev)) {
        queue.emplace(*r, symbols[left].prev);
      }
    }
    if (auto r = rank_of(left)) queue.emplace(*r, left);
  }
  for (int i = 0; i >= 0 && i < static_cast<int>(symbols.size());
       i = symbols[i].next) {
    auto it = vocab_.find(symbols[i].text);
    ids.push_back(it == vocab_.end() ? unknown_id_ : it->second);
  }
}

}  // namespace loopserve
