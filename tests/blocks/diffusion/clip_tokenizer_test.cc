// loopserve's CLIP tokenizer against transformers': the ids of over 10,000
// texts (accents, decomposed characters, punctuation, digits, emoji, scripts,
// whitespace and control characters, special tokens, empty and over-long
// ones) from SD 1.x's tokenizer and SDXL's second (which pads with "!"),
// both built from CLIP's real vocabulary. make_tokenizer_corpus.py writes
// the tokenizers and transformers' ids (TOKENIZER_CORPUS names the folder).
#include "blocks/diffusion/clip_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/testing/status_matchers.h"
#include "util/file.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string CorpusDir() {
  const char* dir = std::getenv("TOKENIZER_CORPUS");
  return dir == nullptr ? "" : dir;
}

struct Case {
  std::string text;
  std::string tokenizer;
  std::vector<int64_t> ids;
};

std::vector<Case> ReadCorpus() {
  std::vector<Case> cases;
  std::ifstream file(CorpusDir() + "/corpus.txt");
  std::string line;
  while (std::getline(file, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    Case c;
    if (fields.size() < 2) continue;
    c.text = absl::HexStringToBytes(fields[0]);
    c.tokenizer = fields[1];
    for (size_t i = 2; i < fields.size(); ++i) {
      int64_t id = 0;
      if (absl::SimpleAtoi(fields[i], &id)) c.ids.push_back(id);
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

class ClipTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CorpusDir().empty()) GTEST_SKIP() << "TOKENIZER_CORPUS is not set";
  }
};

TEST_F(ClipTokenizerTest, IdsEqualTransformersOnTheCorpus) {
  std::map<std::string, std::shared_ptr<const ClipTokenizer>> tokenizers;
  for (const std::string name : {"sd15", "sdxl"}) {
    ASSERT_OK_AND_ASSIGN(tokenizers[name],
                         ClipTokenizer::Load(CorpusDir() + "/" + name));
  }
  const std::vector<Case> cases = ReadCorpus();
  ASSERT_GE(cases.size(), 20000u);
  int mismatches = 0;
  for (const Case& c : cases) {
    ASSERT_OK_AND_ASSIGN(std::vector<int64_t> ids,
                         tokenizers.at(c.tokenizer)->Encode(c.text));
    if (ids != c.ids && ++mismatches <= 10) {
      ADD_FAILURE() << c.tokenizer << " '" << absl::CHexEscape(c.text)
                    << "':\n  loopserve:    " << absl::StrJoin(ids, " ")
                    << "\n  transformers: " << absl::StrJoin(c.ids, " ");
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << cases.size();
}

TEST_F(ClipTokenizerTest, PadsWithEachTokenizersPad) {
  ASSERT_OK_AND_ASSIGN(auto sd15, ClipTokenizer::Load(CorpusDir() + "/sd15"));
  ASSERT_OK_AND_ASSIGN(auto sdxl, ClipTokenizer::Load(CorpusDir() + "/sdxl"));
  EXPECT_EQ(sd15->model_max_length(), 77);
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> ids, sd15->Encode("A photo"));
  ids.resize(5);
  EXPECT_THAT(ids, ElementsAre(49406, 320, 1125, 49407, 49407));
  ASSERT_OK_AND_ASSIGN(ids, sdxl->Encode("A photo"));
  ids.resize(5);
  EXPECT_THAT(ids, ElementsAre(49406, 320, 1125, 49407, 0));
}

TEST_F(ClipTokenizerTest, RefusesTextThatIsNotUtf8) {
  ASSERT_OK_AND_ASSIGN(auto sd15, ClipTokenizer::Load(CorpusDir() + "/sd15"));
  EXPECT_THAT(
      sd15->Encode("caf\xc3"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not UTF-8")));
}

TEST_F(ClipTokenizerTest, RefusesAFolderItCannotRead) {
  EXPECT_THAT(ClipTokenizer::Load(CorpusDir() + "/nowhere"),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("nowhere/tokenizer.json")));
}

TEST_F(ClipTokenizerTest, RefusesAnotherNormalizer) {
  const std::string dir =
      std::string(::testing::TempDir()) + "/bert_like_tokenizer";
  std::filesystem::create_directories(dir);
  std::string json = *ReadWholeFile(CorpusDir() + "/sd15/tokenizer.json");
  const size_t at = json.find("\"Lowercase\"");
  ASSERT_NE(at, std::string::npos);
  json.replace(at, 11, "\"Strip\"");
  std::ofstream(dir + "/tokenizer.json") << json;
  std::filesystem::copy_file(CorpusDir() + "/sd15/tokenizer_config.json",
                             dir + "/tokenizer_config.json",
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_THAT(ClipTokenizer::Load(dir),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'normalizer' is not CLIP's")));
}

}  // namespace
}  // namespace loopserve
