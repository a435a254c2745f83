#include "common/auth.h"

#include <gflags/gflags.h>
#include <glog/logging.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/client_interceptor.h>
#include <grpcpp/support/status.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/metrics.h"
#include "common/process.h"

DEFINE_string(auth_token_file, "",
              "Server side: file of \"role token\" lines (roles: worker, "
              "admin); every gRPC call must then carry a known token. Empty: "
              "$PLEXUS_AUTH_TOKEN_FILE, else no tokens required.");
DEFINE_string(token_file, "",
              "Client side: file holding the token sent to servers that "
              "require one. Empty: $PLEXUS_TOKEN_FILE, else $PLEXUS_TOKEN.");

namespace plexus {
namespace {

constexpr char kBearer[] = "Bearer ";

// The role each RPC needs, by method name, for both services. A name in both
// services (CreateVariable, Restore, ListCheckpoints, SetFailpoint) has one
// role. UpdateShardMap is a worker's: a standalone PS client installs its own
// map at connect (worker/ps_client.h).
const std::map<std::string, AuthRole>& Table() {
  static const auto* const table = new std::map<std::string, AuthRole>{
      // plexus.v1.ParameterServer
      {"Pull", AuthRole::kWorker},
      {"Push", AuthRole::kWorker},
      {"PushPull", AuthRole::kWorker},
      {"Describe", AuthRole::kWorker},
      {"ListVariables", AuthRole::kWorker},
      {"GetShardInfo", AuthRole::kWorker},
      {"UpdateShardMap", AuthRole::kWorker},
      {"CreateVariable", AuthRole::kAdmin},
      {"CreateTable", AuthRole::kAdmin},
      {"DeleteVariable", AuthRole::kAdmin},
      {"DeleteTable", AuthRole::kAdmin},
      {"PrepareCheckpoint", AuthRole::kAdmin},
      {"CommitCheckpoint", AuthRole::kAdmin},
      {"FinalizeCheckpoint", AuthRole::kAdmin},
      {"Restore", AuthRole::kAdmin},
      {"ListCheckpoints", AuthRole::kWorker},
      {"SetFailpoint", AuthRole::kAdmin},
      // plexus.v1.Coordinator
      {"Register", AuthRole::kWorker},
      {"Heartbeat", AuthRole::kWorker},
      {"ListProcesses", AuthRole::kWorker},
      {"GetShardMap", AuthRole::kWorker},
      {"ReportShardReady", AuthRole::kWorker},
      {"NextTask", AuthRole::kWorker},
      {"ReportResult", AuthRole::kWorker},
      {"Join", AuthRole::kWorker},
      {"Fetch", AuthRole::kWorker},
      {"GetJobStatus", AuthRole::kWorker},
      {"RendezvousSet", AuthRole::kWorker},
      {"RendezvousGet", AuthRole::kWorker},
      {"RendezvousWait", AuthRole::kWorker},
      {"JoinGroup", AuthRole::kWorker},
      {"GetGroup", AuthRole::kWorker},
      {"BumpGroupEpoch", AuthRole::kWorker},
      {"SubmitJob", AuthRole::kAdmin},
      {"Schedule", AuthRole::kAdmin},
      {"CancelJob", AuthRole::kAdmin},
      {"TriggerCheckpoint", AuthRole::kAdmin},
  };
  return *table;
}

// Installed once before serving, read by every handler afterwards.
std::atomic<const TokenTable*> g_tokens{nullptr};

bool PrintableToken(absl::string_view token) {
  for (char c : token) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return !token.empty();
}

void WarnIfOthersCanRead(const std::string& path, const char* what) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && (st.st_mode & 0044) != 0) {
    LOG(WARNING) << what << " " << path
                 << " is readable by group or others; chmod 600 it";
  }
}

Counter* AuthFailures(const char* reason) {
  return Metrics()->GetCounter(
      "plexus_auth_failures_total",
      "Calls refused for a missing or unknown token (unauthenticated) or a "
      "role too low for the method (permission_denied).",
      {{"reason", reason}});
}

class TokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_});
    }
    methods->Proceed();
  }

 private:
  const std::string* const header_;  // owned by the factory
};

class TokenInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(const std::string& token)
      : header_(absl::StrCat(kBearer, token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&header_);
  }

 private:
  const std::string header_;
};

}  // namespace

absl::string_view AuthRoleName(AuthRole role) {
  return role == AuthRole::kAdmin ? "admin" : "worker";
}

absl::StatusOr<TokenTable> TokenTable::Parse(absl::string_view text,
                                             absl::string_view source) {
  TokenTable t;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line_no, ": ", why));
    };
    if (fields.size() != 2) {
      return bad("expected \"role token\" (roles: worker, admin)");
    }
    AuthRole role;
    if (fields[0] == "worker") {
      role = AuthRole::kWorker;
    } else if (fields[0] == "admin") {
      role = AuthRole::kAdmin;
    } else {
      return bad(absl::StrCat("unknown role \"", fields[0],
                              "\" (roles: worker, admin)"));
    }
    if (!PrintableToken(fields[1])) {
      return bad("a token is printable ASCII without spaces");
    }
    if (t.Find(fields[1]) != nullptr) return bad("token listed twice");
    t.entries_.emplace_back(std::string(fields[1]), role);
  }
  if (t.entries_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": no tokens (every call would be refused)"));
  }
  return t;
}

absl::StatusOr<TokenTable> TokenTable::Load(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path, "token file");
  if (!text.ok()) return text.status();
  WarnIfOthersCanRead(path, "token file");
  return Parse(*text, path);
}

const AuthRole* TokenTable::Find(absl::string_view token) const {
  const AuthRole* found = nullptr;
  for (const auto& [known, role] : entries_) {
    // Every entry is compared in full, so the time says nothing about which
    // byte of a guess was wrong.
    unsigned diff = known.size() ^ token.size();
    for (size_t i = 0; i < known.size(); ++i) {
      diff |= static_cast<unsigned char>(known[i]) ^
              static_cast<unsigned char>(i < token.size() ? token[i] : 0);
    }
    if (diff == 0) found = &role;
  }
  return found;
}

AuthRole RequiredRole(absl::string_view method) {
  auto it = Table().find(std::string(method));
  return it == Table().end() ? AuthRole::kAdmin : it->second;
}

const std::map<std::string, AuthRole>& MethodRoles() { return Table(); }

absl::Status InstallServerAuth(const std::string& path) {
  std::string file = path;
  if (file.empty()) {
    const char* env = std::getenv("PLEXUS_AUTH_TOKEN_FILE");
    if (env != nullptr) file = env;
  }
  if (file.empty()) return absl::OkStatus();
  absl::StatusOr<TokenTable> table = TokenTable::Load(file);
  if (!table.ok()) return table.status();
  LOG(INFO) << "auth: " << table->size() << " token(s) from " << file
            << "; every call needs one";
  // Never freed: handlers may read it until the process exits.
  delete g_tokens.exchange(new TokenTable(*std::move(table)));
  return absl::OkStatus();
}

bool ServerAuthEnabled() { return g_tokens.load() != nullptr; }

namespace {
// Set once, never freed (handlers may read it until the process exits).
std::atomic<const std::string*> g_refusing{nullptr};
}  // namespace

void RefuseNewCalls(absl::string_view why) {
  const std::string* fresh = new std::string(why);
  const std::string* expected = nullptr;
  if (!g_refusing.compare_exchange_strong(expected, fresh)) delete fresh;
}

grpc::Status Authorize(const grpc::ServerContextBase* ctx,
                       absl::string_view method) {
  if (const std::string* why = g_refusing.load(std::memory_order_acquire)) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        absl::StrCat(method, ": ", *why));
  }
  const TokenTable* tokens = g_tokens.load(std::memory_order_acquire);
  if (tokens == nullptr) return grpc::Status::OK;
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    AuthFailures("unauthenticated")->Increment();
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "this server requires a token: send "
                        "\"authorization: Bearer <token>\" (--token_file, "
                        "PLEXUS_TOKEN_FILE or PLEXUS_TOKEN)");
  }
  absl::string_view value(it->second.data(), it->second.size());
  const AuthRole* role = nullptr;
  if (absl::ConsumePrefix(&value, kBearer)) role = tokens->Find(value);
  if (role == nullptr) {
    AuthFailures("unauthenticated")->Increment();
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown token");
  }
  AuthRole needed = RequiredRole(method);
  if (*role < needed) {
    AuthFailures("permission_denied")->Increment();
    return grpc::Status(
        grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat(method, " needs the ", AuthRoleName(needed),
                     " role; this token has the ", AuthRoleName(*role),
                     " role"));
  }
  return grpc::Status::OK;
}

absl::StatusOr<std::string> ClientToken(const std::string& explicit_token) {
  std::string token = explicit_token;
  std::string source = "the given token";
  if (token.empty()) {
    std::string file = FLAGS_token_file;
    if (const char* env = std::getenv("PLEXUS_TOKEN_FILE");
        file.empty() && env != nullptr) {
      file = env;
    }
    if (!file.empty()) return ReadTokenFile(file);
    if (const char* env = std::getenv("PLEXUS_TOKEN"); env != nullptr) {
      token = env;
      source = "PLEXUS_TOKEN";
    }
  }
  if (!token.empty() && !PrintableToken(token)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the token from ", source,
                     " has characters outside printable ASCII or spaces"));
  }
  return token;
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path, "token file");
  if (!text.ok()) return text.status();
  WarnIfOthersCanRead(path, "token file");
  std::string token(absl::StripAsciiWhitespace(*text));
  if (!PrintableToken(token)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token file ", path,
        " is empty or has characters outside printable ASCII or spaces"));
  }
  return token;
}

std::vector<
    std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
TokenInterceptors(const std::string& token) {
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      v;
  if (!token.empty()) {
    v.push_back(std::make_unique<TokenInterceptorFactory>(token));
  }
  return v;
}

}  // namespace plexus
