// A small, strict JSON reader for configuration (cluster specs, TF_CONFIG).
//
// Accepts RFC 8259 JSON: objects, arrays, strings (all escapes, \uXXXX with
// surrogate pairs, encoded as UTF-8), numbers, true, false, null. Rejects with
// INVALID_ARGUMENT and the byte offset of the problem: trailing garbage,
// trailing commas, comments, single quotes, unescaped control characters in
// strings, duplicate object keys, nesting deeper than kMaxJsonDepth, and input
// larger than kMaxJsonBytes.
//
// Thread safety: Json values are plain values; ParseJson is reentrant.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace plexus::coordinator::membership {

class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  using Array = std::vector<Json>;
  using Object = std::map<std::string, Json, std::less<>>;

  Json() = default;  // null
  static Json Bool(bool b);
  static Json Number(double d);
  static Json String(std::string s);
  static Json MakeArray(Array a);
  static Json MakeObject(Object o);

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  // Accessors. REQUIRES: the matching is_*() is true.
  bool bool_value() const;
  double number_value() const;
  const std::string& string_value() const;
  const Array& array() const;
  const Object& object() const;

  // For an object: the member named `key`, or nullptr if absent (or if this
  // is not an object).
  const Json* Find(absl::string_view key) const;

  // The name of a type, for error messages ("string", "array", ...).
  static absl::string_view TypeName(Type t);

 private:
  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  // Held by pointer so Json stays a complete type inside its own containers.
  std::shared_ptr<const Array> array_;
  std::shared_ptr<const Object> object_;
};

inline constexpr int kMaxJsonDepth = 64;
inline constexpr size_t kMaxJsonBytes = 16 << 20;

// Parses one JSON document (surrounding whitespace allowed).
absl::StatusOr<Json> ParseJson(absl::string_view text);

}  // namespace plexus::coordinator::membership
