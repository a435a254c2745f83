// Token authentication with roles for every gRPC endpoint.
//
// Servers: a token file (--auth_token_file, or the PLEXUS_AUTH_TOKEN_FILE
// environment variable) holds one "role token" pair per line; '#' starts a
// comment, blank lines are skipped. Roles are "worker" (pull, push, register,
// heartbeat, read state, rendezvous) and "admin" (everything a worker may do,
// plus creating and deleting tables and variables, checkpoints, restores,
// submitting and cancelling jobs, failpoints). Without a token file a server
// is open, as before.
//
//   # /etc/plexus/tokens (mode 0600)
//   admin  3f9c...e1
//   worker 77ab...0c
//
// Every handler starts with PLEXUS_AUTHORIZE(ctx): it looks the handler's
// method up in the one method -> role table (auth.cc) and returns
// UNAUTHENTICATED for a missing or unknown token, PERMISSION_DENIED for a
// token whose role is too low. gRPC 1.51's AuthMetadataProcessor only runs on
// TLS servers, hence a check in the handlers rather than in the transport.
//
// Clients send "authorization: Bearer <token>" on every call (a client
// interceptor on the channel, TokenInterceptors()). The token comes from a
// file or the environment, never from the command line, where `ps` would
// show it: --token_file, else PLEXUS_TOKEN_FILE, else PLEXUS_TOKEN.
//
// Thread safety: InstallServerAuth() is called once at startup, before the
// server serves; everything else may be called from any thread.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace grpc {
class ServerContext;
class ServerContextBase;
class Status;
namespace experimental {
class ClientInterceptorFactoryInterface;
}  // namespace experimental
}  // namespace grpc

namespace plexus {

// Ordered: a role may do everything a lower one may.
enum class AuthRole { kWorker = 1, kAdmin = 2 };

// "worker" / "admin".
absl::string_view AuthRoleName(AuthRole role);

// The tokens a server accepts and their roles.
class TokenTable {
 public:
  // Parses the text of a token file. INVALID_ARGUMENT naming `source` and the
  // line for an unknown role, a line that is not "role token", a token with
  // characters outside printable ASCII, or a token listed twice; an empty
  // table is INVALID_ARGUMENT too (it would lock everyone out).
  static absl::StatusOr<TokenTable> Parse(absl::string_view text,
                                          absl::string_view source);
  // Reads and parses `path`. NOT_FOUND / PERMISSION_DENIED naming the file
  // when it cannot be read.
  static absl::StatusOr<TokenTable> Load(const std::string& path);

  // The role of `token`, or nullptr when unknown. Compares in time that does
  // not depend on where a wrong token first differs.
  const AuthRole* Find(absl::string_view token) const;
  size_t size() const { return entries_.size(); }

 private:
  std::vector<std::pair<std::string, AuthRole>> entries_;
};

// The role a method needs, by its short name ("Pull", "TriggerCheckpoint"),
// from the table in auth.cc; a name missing there needs kAdmin (fail closed).
// A method with the same name in two services needs the same role in both.
AuthRole RequiredRole(absl::string_view method);
// Every (method, role) pair of the table, for tests that check it covers the
// services.
const std::map<std::string, AuthRole>& MethodRoles();

// Makes the process's gRPC handlers require tokens from `path` (the daemon
// shell calls it at startup). Empty `path`: the PLEXUS_AUTH_TOKEN_FILE
// environment variable; both empty: no tokens required. Errors from Load().
absl::Status InstallServerAuth(const std::string& path);
// Whether this process requires tokens.
bool ServerAuthEnabled();

// OK when the call's token may run `method` (or no tokens are required);
// UNAUTHENTICATED / PERMISSION_DENIED otherwise, counted in
// plexus_auth_failures_total{reason}. Sync and callback handlers alike.
// Once RefuseNewCalls() has been called, every call is UNAVAILABLE first.
grpc::Status Authorize(const grpc::ServerContextBase* ctx,
                       absl::string_view method);

// From now on Authorize() refuses every call with UNAVAILABLE: a draining
// daemon calls it before it turns NOT_SERVING, so that no call that arrives
// after the drain began is served (gRPC's own refusal starts a moment later,
// when the server's Shutdown() begins). Calls already past Authorize() finish.
void RefuseNewCalls(absl::string_view why);

// The client's token: `explicit_token` if not empty, else the contents of
// --token_file, else of the file PLEXUS_TOKEN_FILE names, else PLEXUS_TOKEN,
// else "" (no token). Surrounding whitespace of a file is dropped.
// INVALID_ARGUMENT for a token with characters outside printable ASCII;
// NOT_FOUND / PERMISSION_DENIED for a file that cannot be read.
absl::StatusOr<std::string> ClientToken(const std::string& explicit_token = "");

// The token in the file `path` (surrounding whitespace dropped), checked as
// ClientToken() checks it.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// Client interceptors that add "authorization: Bearer <token>" to every call;
// none for an empty token. For grpc::experimental::
// CreateCustomChannelWithInterceptors.
std::vector<
    std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
TokenInterceptors(const std::string& token);

}  // namespace plexus

// Returns the authorization failure from the enclosing gRPC handler. The
// handler's own name (__func__) is the method looked up in the role table, so
// the same line fits every handler.
#define PLEXUS_AUTHORIZE(ctx)                                           \
  do {                                                                  \
    ::grpc::Status plexus_auth_ = ::plexus::Authorize((ctx), __func__); \
    if (!plexus_auth_.ok()) return plexus_auth_;                        \
  } while (0)
