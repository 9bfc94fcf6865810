// CLIP's byte-pair tokenizer, as Hugging Face's `tokenizers` runs the
// `tokenizer.json` a CLIPTokenizer saves: the ids Stable Diffusion's text
// encoders take.
//
//   added tokens   the text is first cut at every added token's text (the
//                  special tokens: <|startoftext|>, <|endoftext|>, and
//                  SDXL's second tokenizer's pad token "!"), each piece
//                  between them then goes through the steps below;
//   normalizer     Unicode NFC; every whitespace run becomes one space;
//                  each character lower-cased on its own (no final sigma);
//   pre-tokenizer  CLIP's word pattern ('s 't 're 've 'm 'll 'd, letter
//                  runs, single digits, runs of anything else but spaces),
//                  then GPT-2's byte-level split and byte -> character map;
//   model          BPE: each word's characters, the last with "</w>",
//                  merged by rank;
//   post-process   <bos> ids <eos>, the ids cut to model_max_length - 2
//                  first; padded with the pad token to model_max_length
//                  (diffusers' padding="max_length", truncation=True).
//
// A tokenizer.json of another shape (another normalizer, pattern or model)
// is refused when it loads, naming what differs.
//
// Thread-safety: immutable after Load; Encode is safe from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loopserve {

class ClipTokenizer {
 public:
  // Reads DIR/tokenizer.json and DIR/tokenizer_config.json (its
  // model_max_length and pad_token), as transformers' CLIPTokenizer saves
  // them. NOT_FOUND names a missing file; INVALID_ARGUMENT names the file
  // and the part of it loopserve does not implement.
  static absl::StatusOr<std::shared_ptr<const ClipTokenizer>> Load(
      const std::string& dir);

  // The ids of `text`, exactly model_max_length() of them.
  // INVALID_ARGUMENT when `text` is not UTF-8.
  absl::StatusOr<std::vector<int64_t>> Encode(absl::string_view text) const;

  int64_t model_max_length() const { return max_length_; }
  int64_t pad_id() const { return pad_id_; }

 private:
  ClipTokenizer() = default;
  struct AddedToken {
    std::u32string text;
    int64_t id;
  };
  // Appends the ids of `text` (no added token in it) to `ids`, stopping
  // once there are `limit`.
  void EncodeText(const std::u32string& text, size_t limit,
                  std::vector<int64_t>& ids) const;
  // Appends the BPE ids of one pre-tokenized word, given as its UTF-8.
  void EncodeWord(absl::string_view utf8, std::vector<int64_t>& ids) const;

  absl::flat_hash_map<std::string, int64_t> vocab_;
  // (left, right) -> rank, as "left right".
  absl::flat_hash_map<std::string, int32_t> merge_ranks_;
  std::vector<AddedToken> added_;  // longest first
  // GPT-2's byte-level symbol of each byte, as UTF-8.
  std::string byte_symbols_[256];
  int64_t bos_id_ = 0;
  int64_t eos_id_ = 0;
  int64_t pad_id_ = 0;
  int64_t unknown_id_ = 0;
  int64_t max_length_ = 77;
};

}  // namespace loopserve
