// libFuzzer target: the CLIP tokenizer on any text a client may send as a
// prompt. A text either fails as not UTF-8 or gives exactly
// model_max_length ids, starting with <bos>, each in the vocabulary.
//
//   build-sanitize/tests/fuzz/tokenizer_fuzz -max_total_time=60 \
//       NEW_CORPUS tests/fuzz/corpus/tokenizer
//
// The tokenizer is a small one written at start-up in the shape
// transformers saves CLIP's: the 512 byte symbols, a few merges, the
// special tokens, and SDXL's "!" pad as an added token.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "blocks/diffusion/clip_tokenizer.h"

namespace {

std::string Utf8(char32_t c) {
  std::string out;
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
  return out;
}

std::string Quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

int64_t vocab_size = 0;

std::shared_ptr<const loopserve::ClipTokenizer> MakeTokenizer() {
  std::string symbols[256];
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable =
        (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    symbols[b] = Utf8(printable ? static_cast<char32_t>(b) : next++);
  }
  std::string vocab;
  int64_t id = 0;
  auto add = [&](const std::string& token) {
    absl::StrAppend(&vocab, vocab.empty() ? "" : ",", Quoted(token), ":", id++);
  };
  for (const std::string& s : symbols) add(s);
  for (const std::string& s : symbols) add(s + "</w>");
  const char* merges[][2] = {{"a", "b"},      {"ab", "c</w>"}, {"t", "h"},
                             {"th", "e</w>"}, {"a", "a"},      {"aa", "aa"}};
  std::string merge_list;
  for (const auto& m : merges) {
    add(std::string(m[0]) + m[1]);
    absl::StrAppend(&merge_list, merge_list.empty() ? "" : ",", "[",
                    Quoted(m[0]), ",", Quoted(m[1]), "]");
  }
  const int64_t bos = id;
  add("<|startoftext|>");
  const int64_t eos = id;
  add("<|endoftext|>");
  vocab_size = id;
  const std::string json = absl::StrCat(
      R"({"added_tokens": [
        {"id": 0, "content": "!", "single_word": false, "lstrip": false,
         "rstrip": false, "normalized": false, "special": true},
        {"id": )",
      bos, R"(, "content": "<|startoftext|>", "single_word": false,
         "lstrip": false, "rstrip": false, "normalized": false,
         "special": true},
        {"id": )",
      eos, R"(, "content": "<|endoftext|>", "single_word": false,
         "lstrip": false, "rstrip": false, "normalized": false,
         "special": true}],
      "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"},
        {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
        {"type": "Lowercase"}]},
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
         "behavior": "Removed", "invert": true},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
         "use_regex": true}]},
      "post_processor": {"type": "RobertaProcessing",
        "sep": ["<|endoftext|>", )",
      eos, R"(], "cls": ["<|startoftext|>", )", bos,
      R"(], "trim_offsets": false, "add_prefix_space": false},
      "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>",
        "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
        "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
        "vocab": {)",
      vocab, R"(}, "merges": [)", merge_list, "]}}");
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / "loopserve_tokenizer_fuzz";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << json;
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"model_max_length": 16, "pad_token": "!"})";
  auto tokenizer = loopserve::ClipTokenizer::Load(dir.string());
  if (!tokenizer.ok()) std::abort();
  return *tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto tokenizer = MakeTokenizer();
  const auto ids = tokenizer->Encode(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!ids.ok()) return 0;
  if (static_cast<int64_t>(ids->size()) != tokenizer->model_max_length() ||
      ids->front() != vocab_size - 2) {
    std::abort();
  }
  for (int64_t id : *ids) {
    if (id < 0 || id >= vocab_size) std::abort();
  }
  return 0;
}
