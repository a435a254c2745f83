#include "coordinator/membership/json.h"

#include <string>

#include <gtest/gtest.h>

namespace plexus::coordinator::membership {
namespace {

TEST(JsonTest, ParsesEveryType) {
  absl::StatusOr<Json> j = ParseJson(
      R"( {"a": [1, -2.5e1, true, false, null], "b": {"c": "d"}, "e": ""} )");
  ASSERT_TRUE(j.ok()) << j.status();
  ASSERT_TRUE(j->is_object());
  const Json* a = j->Find("a");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->array().size(), 5u);
  EXPECT_EQ(a->array()[0].number_value(), 1);
  EXPECT_EQ(a->array()[1].number_value(), -25);
  EXPECT_TRUE(a->array()[2].bool_value());
  EXPECT_FALSE(a->array()[3].bool_value());
  EXPECT_TRUE(a->array()[4].is_null());
  EXPECT_EQ(j->Find("b")->Find("c")->string_value(), "d");
  EXPECT_EQ(j->Find("e")->string_value(), "");
  EXPECT_EQ(j->Find("missing"), nullptr);
}

TEST(JsonTest, DecodesEscapes) {
  absl::StatusOr<Json> j = ParseJson(R"("q\"b\\s\/n\nt\tu\u00e9\ud83d\ude00")");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->string_value(), "q\"b\\s/n\nt\tu\xc3\xa9\xf0\x9f\x98\x80");
}

TEST(JsonTest, RejectsMalformedInputWithOffset) {
  const char* bad[] = {
      "",           "{",           "[1,]",
      "{\"a\":1,}", "{'a':1}",     "{\"a\" 1}",
      "01",         "1.",          "-",
      "1e",         "tru",         "\"abc",
      "\"\\x\"",    "\"\\ud83d\"", "\"\\ude00\"",
      "[1] [2]",    "// c\n{}",    "{\"a\":1,\"a\":2}",
      "\"a\tb\"",   "1e999",       "{\"a\"}",
      "[1 2]",      "nul",         "\"\\u12g4\"",
  };
  for (const char* text : bad) {
    absl::StatusOr<Json> j = ParseJson(text);
    EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument) << text;
    if (!j.ok()) {
      EXPECT_NE(j.status().message().find("invalid JSON at byte"),
                std::string::npos)
          << j.status();
    }
  }
}

TEST(JsonTest, DuplicateKeyNamesTheKey) {
  absl::StatusOr<Json> j = ParseJson(R"({"ps": [], "ps": []})");
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.status().message().find("duplicate key \"ps\""),
            std::string::npos);
}

TEST(JsonTest, LimitsDepth) {
  std::string ok(kMaxJsonDepth, '[');
  ok += std::string(kMaxJsonDepth, ']');
  EXPECT_TRUE(ParseJson(ok).ok());
  std::string deep(kMaxJsonDepth + 2, '[');
  deep += std::string(kMaxJsonDepth + 2, ']');
  EXPECT_EQ(ParseJson(deep).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace plexus::coordinator::membership

namespace plexus::coordinator::membership {
namespace {

// Random bytes and every prefix of a valid document: an error or a value,
// never a crash (run under ASan in the sanitizer builds).
TEST(JsonTest, ArbitraryInputNeverCrashes) {
  const std::string doc =
      R"({"cluster": {"worker": ["a:1", "b:2"], "ps": []}, "x": [1.5e3, true, null, "\u00e9\ud83d\ude00"]})";
  for (size_t n = 0; n <= doc.size(); ++n) (void)ParseJson(doc.substr(0, n));
  uint64_t state = 0x9E3779B97F4A7C15ull;
  const char alphabet[] = "{}[]\",:\\u0123456789eE+-.truefalsnl \t\n\x01\xff";
  for (int i = 0; i < 5000; ++i) {
    std::string input;
    for (int j = 0; j < 40; ++j) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      input.push_back(alphabet[state % (sizeof(alphabet) - 1)]);
    }
    absl::StatusOr<Json> j = ParseJson(input);
    if (!j.ok()) {
      EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace plexus::coordinator::membership
